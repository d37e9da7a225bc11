"""The encoder under a sentence model: loaded from its folder, and run on packed tokens to give (T, H) states.

BERT runs on bertfast's own `BertModel` (packed in, packed out, no transformers). Every other family the
registry (`bertfast.families`) supports is loaded with transformers' AutoModel from local files and patched
by `bertfast.optimize()`, whose packed entry point (`bertfast.hf.forward_packed`) it runs.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from .. import families
from ..encoder import PATCH_ATTR
from ..hf import forward_packed, optimize
from ..modeling import BertModel
from .folder import read_json


def family_of(model: nn.Module) -> families.Family:
    """The registry's entry for an encoder: bertfast's BertModel, or a transformers base model."""
    return families.family_for("bert" if isinstance(model, BertModel) else model.config)


def load_encoder(encoder_dir: str, *, device, dtype: torch.dtype | None, backend: str) -> nn.Module:
    """The folder's encoder, on `device` in `dtype` (default: the checkpoint's), in eval mode. A model_type
    the registry does not know is refused by name before anything is loaded."""
    path = os.path.join(encoder_dir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no config.json in {encoder_dir!r}: not an encoder or sentence-transformers folder")
    family = families.family_of_config_json(read_json(path))
    if family.model_type == "bert":
        return BertModel.from_pretrained(encoder_dir, device=device, dtype=dtype, backend=backend)
    try:
        import transformers
    except ImportError:
        raise ImportError(
            f"a {family.model_type!r} encoder loads with transformers (only BERT has a native loader): "
            "pip install transformers"
        ) from None
    transformers.utils.logging.disable_progress_bar()
    kwargs = {} if dtype is None else {"dtype": dtype}
    model = transformers.AutoModel.from_pretrained(encoder_dir, local_files_only=True, **kwargs)
    return optimize(model.to(device).eval(), backend=backend)


def longest_input(model: nn.Module) -> int:
    """The longest sequence the encoder runs: its Spec's limit, the one its input checks enforce
    (RoBERTa's and MPNet's positions start after the embeddings' own padding_idx)."""
    spec = model.spec if isinstance(model, BertModel) else model.__dict__[PATCH_ATTR].spec
    return spec.max_seq_len


def token_states(
    model: nn.Module, ids: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int, types: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Last-layer states (T, H) of the packed sequences `ids` (T,) laid out by `cu_seqlens` (B + 1,), and
    cu_seqlens on the states' device. No padding anywhere, for every family."""
    if isinstance(model, BertModel):
        out = model.forward_packed(ids, cu_seqlens, max_seqlen=max_seqlen, token_type_ids=types)
    else:
        types = types if family_of(model).token_types else None  # DistilBERT, MPNet, RoBERTa-likes read none
        out = forward_packed(model, ids, cu_seqlens, max_seqlen=max_seqlen, token_type_ids=types)
    return out.last_hidden_state, out.cu_seqlens  # (T, H), (B + 1,)


def describe(model: nn.Module) -> str:
    """The encoder's architecture and size, for a repr."""
    c = model.config
    return (
        f"{type(model).__name__}({family_of(model).model_type}, hidden={c.hidden_size}, layers={c.num_hidden_layers}, "
        f"heads={c.num_attention_heads})"
    )
