"""Pooling per packed sequence and the modules after it (Dense, Normalize), as sentence-transformers applies them."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from ..padding import packed_positions
from .folder import POOLING_MODES, DenseSpec, PoolingSpec


def pool_packed(h: torch.Tensor, cu_seqlens: torch.Tensor, modes: tuple[str, ...]) -> torch.Tensor:
    """Pool packed token states (T, H) per sequence -> (B, len(modes) * H), in sentence-transformers' order."""
    B = cu_seqlens.numel() - 1
    T, H = h.shape
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()  # (B,)
    seq = packed_positions(cu_seqlens, T)[0]  # (T,) each token's sequence
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


def _activation(name: str, where: str) -> nn.Module:
    """A torch.nn activation module from its dotted class name (torch.nn classes only: a config runs no code)."""
    cls = getattr(nn, name.rsplit(".", 1)[-1], None) if name.startswith("torch.nn.") else None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"{where}: activation_function {name!r} is not a torch.nn module class")
    return cls()


def _dense_weights(spec: DenseSpec) -> dict[str, torch.Tensor]:
    st_file = os.path.join(spec.path, "model.safetensors")
    bin_file = os.path.join(spec.path, "pytorch_model.bin")
    if os.path.isfile(st_file):
        from safetensors.torch import load_file

        return load_file(st_file)
    if os.path.isfile(bin_file):
        return torch.load(bin_file, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"Dense module {spec.path!r} has no model.safetensors or pytorch_model.bin")


class SentenceHead(nn.Module):
    """What follows pooling: each Dense (Linear, then its activation) in order, then Normalize if the model has one."""

    def __init__(self, spec: PoolingSpec, pooled_dim: int):
        super().__init__()
        layers = []
        dim = pooled_dim
        for d in spec.dense:
            if d.in_features != dim:
                raise ValueError(f"{d.path}: Dense in_features={d.in_features}, but its input has {dim} dimensions")
            linear = nn.Linear(d.in_features, d.out_features, bias=d.bias)
            state = {k.removeprefix("linear."): v for k, v in _dense_weights(d).items() if k.startswith("linear.")}
            try:
                linear.load_state_dict(state, strict=True)
            except RuntimeError as e:
                raise ValueError(f"{d.path}: Dense weights do not fit its config: {e}") from None
            layers += [linear, _activation(d.activation, f"{d.path}/config.json")]
            dim = d.out_features
        self.layers = nn.Sequential(*layers)
        self.normalize = spec.normalize
        self.out_features = dim

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        x = self.layers(pooled)  # (B, D)
        if self.normalize:
            x = F.normalize(x.float(), p=2, dim=1).to(x.dtype)
        return x
