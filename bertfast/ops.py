"""Dispatch: every op the encoder runs, with a plain torch implementation and a Triton one.

`backend="auto"` runs the Triton kernels on CUDA tensors and torch elsewhere; `"torch"` runs torch
anywhere; `"triton"` runs the kernels, which on CPU tensors needs the Triton interpreter
(TRITON_INTERPRET=1 set before triton is imported). BERTFAST_BACKEND overrides the default ("auto")
for a whole process. Nothing here touches the GPU or imports triton at import time, and nothing
here imports upward: the tuned configs are loaded by the runtime before the first launch.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os

import torch
import torch.nn.functional as F

from . import activations
from .padding import PackInfo, pad, unpad
from .rel_position import MAX_DISTANCE, relative_position_bucket

BACKENDS = ("auto", "torch", "triton")
_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def default_backend() -> str:
    env = os.environ.get("BERTFAST_BACKEND")
    if env is None or env == "":
        return "auto"
    if env not in BACKENDS:
        raise ValueError(f"environment variable BERTFAST_BACKEND must be one of {BACKENDS}, got {env!r}")
    return env


def interpreter_on() -> bool:
    """Whether the Triton interpreter is on (the kernels' own check; False when triton is absent)."""
    return triton_available() and _kernels().interpreting()


@functools.cache
def triton_available() -> bool:
    """Whether triton can be imported (cached; importing it does not touch the GPU)."""
    return importlib.util.find_spec("triton") is not None


@functools.cache
def _kernels():
    from . import kernels

    return kernels


def triton_unavailable_reason(device: torch.device) -> str | None:
    """Why the Triton path cannot run tensors on `device` (None when it can)."""
    if not triton_available():
        return "triton is not installed (pip install triton==3.6.0)"
    if device.type == "cuda":
        return None
    if device.type == "cpu":
        if interpreter_on():
            return None
        return (
            "the Triton kernels run CPU tensors only under the Triton interpreter: "
            "set TRITON_INTERPRET=1 before triton is imported, or use backend='torch'"
        )
    return f"the Triton kernels do not run on {device.type} tensors"


def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype, needs_grad: bool) -> str:
    """The implementation that runs: 'torch' or 'triton'.

    The kernels are inference-only: when autograd needs a graph, the torch path runs (its gradients
    are exact), whatever was asked for.
    """
    if backend == "auto":
        backend = default_backend()
    if backend == "torch" or needs_grad:
        return "torch"
    if backend == "auto":
        ok = device.type == "cuda" and dtype in _TRITON_DTYPES and triton_available()
        return "triton" if ok else "torch"
    # backend == "triton": asked for explicitly, so an impossible request is an error, not a fallback.
    reason = triton_unavailable_reason(device)
    if reason is not None:
        raise RuntimeError(f"backend='triton' cannot run here: {reason}")
    if dtype not in _TRITON_DTYPES:
        raise TypeError(f"backend='triton' supports float16, bfloat16 and float32 weights, got {dtype}")
    return "triton"


# --------------------------------------------------------------------------- ops
def embed_layernorm(
    backend: str,
    input_ids: torch.Tensor | None,  # (T,)
    position_ids: torch.Tensor,  # (T,)
    token_type_ids: torch.Tensor | None,  # (T,); None: type 0 for every token (or no token types)
    word: torch.Tensor,  # (V, E)
    position: torch.Tensor,  # (P, E)
    token_type: torch.Tensor | None,  # (Tt, E); None for families without token types
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
    inputs_embeds: torch.Tensor | None = None,  # (T, E), instead of input_ids
    padding_idx: int | None = None,  # the word row that gets no gradient (nn.Embedding's padding_idx)
) -> torch.Tensor:
    """LayerNorm(word[input_ids] + token_type[token_type_ids] + position[position_ids]) -> (T, E)."""
    if backend == "triton" and inputs_embeds is None:
        if token_type is not None:
            out = torch.empty((input_ids.shape[0], word.shape[1]), dtype=word.dtype, device=word.device)  # (T, E)
            return _kernels().launch_embed_layernorm(
                input_ids, position_ids, token_type_ids, word, position, token_type, weight, bias, eps, out
            )  # the launcher alone: the ids were checked (T >= 1, in range) at the model's boundary
        # Two tables only: the gathered rows go through the residual LayerNorm kernel (sum in fp32).
        return layernorm(backend, word[input_ids], weight, bias, eps, residual=position[position_ids])  # (T, E)
    x = F.embedding(input_ids, word, padding_idx) if inputs_embeds is None else inputs_embeds  # (T, E)
    if token_type is not None:
        x = x + (token_type[token_type_ids] if token_type_ids is not None else token_type[0])  # (T, E)
    x = x + position[position_ids]  # (T, E), HF's order of the sums
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


def linear(
    backend: str,
    x: torch.Tensor,  # (T, K)
    weight: torch.Tensor,  # (N, K)
    bias: torch.Tensor | None,
    activation_name: str | None = None,
    residual: torch.Tensor | None = None,  # (T, N)
) -> torch.Tensor:
    if backend == "triton":
        # The fastest correct implementation for the shape: cuBLAS + fused epilogue, or a Triton GEMM.
        # The launcher alone: the model validated this call's inputs at its boundary (bertfast.inputs).
        kernel_activation = activations.kernel_name(activation_name)
        return _kernels().gemm_dispatch.launch_linear(x, weight, bias, kernel_activation, residual)
    y = F.linear(x, weight, bias)  # (T, N)
    if activation_name is not None:
        y = activations.apply(y, activation_name)
    return y if residual is None else y + residual


def linear_residual_layernorm(
    backend: str,
    x: torch.Tensor,  # (T, K)
    weight: torch.Tensor,  # (N, K)
    bias: torch.Tensor | None,
    residual: torch.Tensor,  # (T, N)
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """LayerNorm(x @ weight^T + bias + residual): BERT's attention-output and FFN2 blocks."""
    if backend == "triton":
        return _kernels().gemm_dispatch.launch_linear_residual_layernorm(
            x, weight, bias, residual, ln_weight, ln_bias, eps
        )
    y = F.linear(x, weight, bias) + residual  # (T, N), HF's order: dense(x) + residual
    return F.layer_norm(y, (y.shape[-1],), ln_weight, ln_bias, eps)


def layernorm(
    backend: str,
    x: torch.Tensor,  # (T, H)
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
    residual: torch.Tensor | None = None,  # (T, H)
) -> torch.Tensor:
    """LayerNorm(x + residual)."""
    if backend == "triton":
        return _kernels().launch_layernorm(x, None, residual, weight, bias, eps, torch.empty_like(x))
    if residual is not None:
        x = x + residual
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


def attention(
    backend: str,
    qkv: torch.Tensor,  # (T, 3H): Q | K | V, heads contiguous within each third
    info: PackInfo,
    num_heads: int,
    dropout_p: float = 0.0,
    rel_bias: torch.Tensor | None = None,  # (num_buckets, N): MPNet's relative_attention_bias.weight
) -> torch.Tensor:
    """Bidirectional attention of each packed sequence over itself; returns (T, H).

    rel_bias adds rel_bias[bucket(j - i), head] to the score of query i and key j, their positions
    within the sequence, with T5's bidirectional buckets (max_distance 128), as MPNet does.
    """
    if backend == "triton":
        if dropout_p:
            raise RuntimeError("the Triton attention kernel is inference-only (dropout_p must be 0)")
        T, H = qkv.shape[0], qkv.shape[1] // 3
        out = torch.empty((T, H), dtype=qkv.dtype, device=qkv.device)  # (T, H)
        # The launcher alone: bertfast.inputs checked this call (T >= 1) at the model's boundary. The scale and the
        # dot precision are varlen_attention's defaults (1 / sqrt(D); IEEE fp32 dots for fp32 weights).
        scale, precision = 1.0 / math.sqrt(H // num_heads), "ieee" if qkv.dtype == torch.float32 else "tf32"
        args = (qkv, info.cu_seqlens, info.max_seqlen, num_heads, scale, rel_bias, MAX_DISTANCE, out, precision)
        return _kernels().launch_varlen_attention(*args)
    T, H3 = qkv.shape
    H = H3 // 3
    D = H // num_heads
    B, S = info.batch, info.seqlen
    # torch's SDPA wants (B, N, S, D): lay the packed tokens out padded, once per layer.
    padded = pad(qkv, info)  # (B, S, 3H)
    q, k, v = padded.view(B, S, 3, num_heads, D).permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, N, S, D)
    mask = None if info.mask is None else info.mask[:, None, None, :]  # (B, 1, 1, S) True = attend
    if rel_bias is not None:
        # An additive float mask: the bias, and -inf on padding keys. (B, N, S, S) is built on this path only.
        if info.mask is None:
            pos = torch.arange(S, device=qkv.device)[None, :]  # (1, S)
        else:
            pos = info.mask.cumsum(1) - 1  # (B, S) position within the sequence (holes skipped)
        rel = pos[:, None, :] - pos[:, :, None]  # (B|1, S, S) key position - query position
        bucket = relative_position_bucket(rel, rel_bias.shape[0], MAX_DISTANCE)  # (B|1, S, S)
        bias = rel_bias.to(q.dtype)[bucket].permute(0, 3, 1, 2)  # (B|1, N, S, S)
        mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
    ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=1.0 / math.sqrt(D))
    ctx = ctx.transpose(1, 2).reshape(B, S, H)  # (B, S, H)
    return unpad(ctx, info)  # (T, H)
