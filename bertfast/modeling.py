"""BERT's modules with Hugging Face's names, the native models, and their loading and saving.

The modules below are containers whose parameter names match transformers' BertModel exactly
(`embeddings.word_embeddings.weight`, `encoder.layer.0.attention.self.query.weight`, ...), so a HF
checkpoint loads as is and `state_dict()` saves one HF loads. The math lives in `bertfast.encoder`,
which reads parameters by those names; the input checks in `bertfast.inputs`; strict loading in
`bertfast.checkpoint`.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from . import ops
from .checkpoint import CheckpointError, find_weights, load_strict, read_state_dict
from .config import BertConfig
from .encoder import RUNNER_ATTR, Spec
from .forward import hf_style_forward, packed_style_forward
from .outputs import BaseModelOutputWithPooling, PackedModelOutput


# =============================================================================== modules
class BertEmbeddings(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        H = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, H, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, H)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, H)
        self.LayerNorm = nn.LayerNorm(H, eps=config.layer_norm_eps)


class BertSelfAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        H = config.hidden_size
        self.query = nn.Linear(H, H)
        self.key = nn.Linear(H, H)
        self.value = nn.Linear(H, H)


class BertSelfOutput(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)


class BertOutput(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))


class BertPooler(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)


# =============================================================================== models
class BertPreTrainedModel(nn.Module):
    """Shared: weight init as BERT does it, strict loading, saving, the backend switch."""

    # Prefix of the encoder's parameters inside this model ("" for BertModel, "bert." for the heads).
    base_prefix = ""
    # Parameter-name prefixes of this class's own head: loaded if the checkpoint has them all,
    # freshly initialized (and reported) if it has none, an error if it has some.
    head_prefixes: tuple[str, ...] = ()

    def __init__(self, config: BertConfig):
        super().__init__()
        if not isinstance(config, BertConfig):
            raise TypeError(f"config must be a bertfast.BertConfig, got {type(config).__name__}")
        self.config = config
        self.backend = ops.check_backend("auto")
        # Replay the forward from CUDA graphs per token bucket (CUDA, Triton path, inference only).
        self.cuda_graphs = True
        self.newly_initialized_keys: list[str] = []

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def init_weights(self) -> None:
        self.apply(self._init_weights)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Heads whose decoder shares the word embeddings override this."""

    def set_backend(self, backend: str) -> BertPreTrainedModel:
        self.backend = ops.check_backend(backend)
        return self

    def set_cuda_graphs(self, enabled: bool) -> BertPreTrainedModel:
        """CUDA graphs on or off for every encoder in this model; off drops the captured graphs."""
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
        for m in self.modules():
            if isinstance(m, BertPreTrainedModel):
                m.cuda_graphs = enabled
                if not enabled:
                    m.__dict__.pop(RUNNER_ATTR, None)
        return self

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | os.PathLike,
        *,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        backend: str = "auto",
        model_kwargs: dict[str, Any] | None = None,
        **config_overrides: Any,
    ):
        """Load `config.json` and `model.safetensors` (or `pytorch_model.bin`) from a directory, strictly.

        `config_overrides` set config fields (e.g. `num_labels=3`); `model_kwargs` go to the
        constructor. The model comes back in eval mode.
        """
        model_dir = os.fspath(model_dir)
        config = BertConfig.from_pretrained(model_dir)
        if config_overrides:
            data = config.to_dict()
            data.update(config_overrides)
            if "num_labels" in config_overrides and "id2label" not in config_overrides:
                data.pop("id2label", None)
            config = BertConfig.from_dict(data)
        model = cls(config, **(model_kwargs or {}))
        path = find_weights(model_dir)
        model.load_checkpoint(read_state_dict(path), source=path)
        if dtype is not None or device is not None:
            model.to(device=device, dtype=dtype)
        model.set_backend(backend)
        return model.eval()

    def _expected_keys(self) -> dict[str, torch.Tensor]:
        return dict(self.state_dict(keep_vars=True))

    def _tied_keys(self) -> set[str]:
        return set()

    def load_checkpoint(self, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
        """Strict load: every parameter must come from the checkpoint (or be a fresh head), nothing
        unknown may be left over, and every shape must match. Errors list all offending keys."""
        load_strict(self, state, source)

    def save_pretrained(self, model_dir: str | os.PathLike) -> None:
        """Write config.json and model.safetensors in Hugging Face's layout (tied weights once)."""
        from safetensors.torch import save_file

        os.makedirs(model_dir, exist_ok=True)
        self.config.to_json_file(os.path.join(model_dir, "config.json"))
        tied = self._tied_keys()
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items() if k not in tied}
        save_file(state, os.path.join(model_dir, "model.safetensors"), metadata={"format": "pt"})


class BertModel(BertPreTrainedModel):
    """BERT's encoder and pooler. Same forward signature and outputs as transformers' BertModel."""

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.spec = Spec.from_config(config)
        self.init_weights()

    @classmethod
    def from_pretrained(cls, model_dir, *, add_pooling_layer: bool | None = None, **kwargs):
        """As BertPreTrainedModel.from_pretrained; the pooler is kept when the checkpoint has one,
        unless `add_pooling_layer` says otherwise."""
        if add_pooling_layer is None:
            BertConfig.from_pretrained(model_dir)  # a broken config is reported before the weights are opened
            add_pooling_layer = _checkpoint_has_pooler(model_dir)
        return super().from_pretrained(model_dir, model_kwargs={"add_pooling_layer": add_pooling_layer}, **kwargs)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ):
        if output_attentions:
            raise ValueError(
                "output_attentions=True is not supported: bertfast never materializes attention "
                "probabilities (use the transformers model for that)"
            )
        last, pooled, hidden = hf_style_forward(
            self,
            self.spec,
            self.backend,
            input_ids,
            attention_mask,
            token_type_ids,
            position_ids,
            inputs_embeds,
            bool(output_hidden_states),
            self.cuda_graphs,
        )
        out = BaseModelOutputWithPooling(last_hidden_state=last, pooler_output=pooled, hidden_states=hidden)
        return out if return_dict is None or return_dict else out.to_tuple()

    def forward_packed(
        self,
        input_ids: torch.Tensor,
        cu_seqlens: torch.Tensor,
        max_seqlen: int | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> PackedModelOutput:
        """The packed form, no padding anywhere: `input_ids` (T,) of B sequences laid end to end,
        `cu_seqlens` (B + 1,) their offsets. Positions restart at 0 in each sequence."""
        return packed_style_forward(
            self,
            self.spec,
            self.backend,
            input_ids,
            cu_seqlens,
            max_seqlen,
            token_type_ids,
            position_ids,
            output_hidden_states,
            self.cuda_graphs,
        )


def _checkpoint_has_pooler(model_dir: str | os.PathLike) -> bool:
    path = find_weights(model_dir)
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        try:
            with safe_open(path, framework="pt") as f:
                keys = list(f.keys())
        except Exception as e:
            raise CheckpointError(f"cannot read weights file {path}: {type(e).__name__}: {e}") from None
    else:
        keys = list(read_state_dict(path))
    return any(k.removeprefix("bert.").startswith("pooler.") for k in keys)
