"""Bidirectional flash attention over packed variable-length sequences, reading Q, K, V in place.

    qkv [T, 3H] (the fused QKV projection: Q = cols [0, H), K = [H, 2H), V = [2H, 3H); head h at
    cols h*D:(h+1)*D of each third) + cu_seqlens [B+1] -> out [T, H] (head h at cols h*D:(h+1)*D)

Grid: (query blocks of max_seqlen, B, num_heads). A program loads its BLOCK_M query rows of one
head of one sequence, then streams that sequence's keys / values in BLOCK_N blocks with an online
softmax in fp32 (exp2, log2(e) folded into the scale). Full key blocks run unmasked; the one ragged
tail block masks keys past the sequence end with -inf. Query rows past the end load as zeros and
are never stored; programs whose query block starts past their sequence return at once. Head dims
that are not a power of two (80, 96) use BLOCK_D = next_power_of_2(D) with a column mask.
"""

from __future__ import annotations

import math
import operator
from typing import Optional

import torch
import triton
import triton.language as tl

from . import _utils

_LOG2E = 1.4426950408889634


@triton.jit
def _load_tile(ptrs, rows_ok, cols_ok, MASK_ROWS: tl.constexpr, MASK_COLS: tl.constexpr):
    """Load a [rows, cols] tile, masking (to zero) only what the constexpr flags say can be out of range."""
    if MASK_ROWS:
        if MASK_COLS:
            tile = tl.load(ptrs, mask=rows_ok[:, None] & cols_ok[None, :], other=0.0)
        else:
            tile = tl.load(ptrs, mask=rows_ok[:, None], other=0.0)
    else:
        if MASK_COLS:
            tile = tl.load(ptrs, mask=cols_ok[None, :], other=0.0)
        else:
            tile = tl.load(ptrs)
    return tile


@triton.jit
def _attention_key_blocks(
    acc, l_i, m_i, q,
    k_base, v_base,  # pointers to this head's K / V column 0 at the sequence's first row
    stride_t, stride_c,
    start, stop, seqlen, qk_scale,
    offs_n, offs_d, d_ok,
    MASK_KEYS: tl.constexpr,
    MASK_D: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Online-softmax update of (acc, l_i, m_i) over key blocks [start, stop) of one sequence."""
    for start_n in range(start, stop, BLOCK_N):
        keys = start_n + offs_n  # [BLOCK_N]
        key_ok = keys < seqlen
        kv_off = keys.to(tl.int64)[:, None] * stride_t + offs_d[None, :] * stride_c  # [BLOCK_N, BLOCK_D]
        k = _load_tile(k_base + kv_off, key_ok, d_ok, MASK_KEYS, MASK_D)
        qk = tl.dot(q, tl.trans(k), input_precision=INPUT_PRECISION) * qk_scale  # [BLOCK_M, BLOCK_N], log2 units
        if MASK_KEYS:
            qk = tl.where(key_ok[None, :], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, axis=1))  # finite: every block holds at least one real key
        p = tl.math.exp2(qk - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = _load_tile(v_base + kv_off, key_ok, d_ok, MASK_KEYS, MASK_D)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=INPUT_PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _varlen_attention_fwd_kernel(
    qkv_ptr, cu_seqlens_ptr, out_ptr,
    stride_qkv_t, stride_qkv_c,
    stride_out_t,
    hidden,  # H = num_heads * HEAD_DIM: offset of K (and 2H of V) within a qkv row
    qk_scale,  # softmax scale * log2(e)
    SEQ_BUCKET,  # autotune key only (max_seqlen rounded up to a power of two)
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    MASK_D: tl.constexpr,  # HEAD_DIM < BLOCK_D (80, 96): mask the padded head columns
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    block_m = tl.program_id(0)
    seq = tl.program_id(1)
    head = tl.program_id(2)
    seq_start = tl.load(cu_seqlens_ptr + seq)
    seqlen = tl.load(cu_seqlens_ptr + seq + 1) - seq_start
    if block_m * BLOCK_M >= seqlen:
        return

    offs_m = block_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M] query rows within the sequence
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    q_ok = offs_m < seqlen
    d_ok = offs_d < HEAD_DIM

    seq_base = seq_start.to(tl.int64) * stride_qkv_t
    head_col = head * HEAD_DIM
    q_base = qkv_ptr + seq_base + head_col * stride_qkv_c
    k_base = qkv_ptr + seq_base + (hidden + head_col) * stride_qkv_c
    v_base = qkv_ptr + seq_base + (2 * hidden + head_col) * stride_qkv_c

    q_off = offs_m.to(tl.int64)[:, None] * stride_qkv_t + offs_d[None, :] * stride_qkv_c
    q = _load_tile(q_base + q_off, q_ok, d_ok, True, MASK_D)  # [BLOCK_M, BLOCK_D]

    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)

    full_end = (seqlen // BLOCK_N) * BLOCK_N
    acc, l_i, m_i = _attention_key_blocks(
        acc, l_i, m_i, q, k_base, v_base, stride_qkv_t, stride_qkv_c,
        0, full_end, seqlen, qk_scale, offs_n, offs_d, d_ok,
        False, MASK_D, INPUT_PRECISION, BLOCK_N,
    )
    acc, l_i, m_i = _attention_key_blocks(  # the ragged tail block, if any (0 or 1 iteration)
        acc, l_i, m_i, q, k_base, v_base, stride_qkv_t, stride_qkv_c,
        full_end, seqlen, seqlen, qk_scale, offs_n, offs_d, d_ok,
        True, MASK_D, INPUT_PRECISION, BLOCK_N,
    )

    acc = acc / l_i[:, None]
    rows = (seq_start + offs_m).to(tl.int64)
    o_ptrs = out_ptr + rows[:, None] * stride_out_t + (head_col + offs_d)[None, :]
    tl.store(o_ptrs, acc.to(out_ptr.dtype.element_ty), mask=q_ok[:, None] & d_ok[None, :])


def _attn_config(bm, bn, warps, stages):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=warps, num_stages=stages)


# H100: 128-row query tiles with 64/128-key blocks for BERT's 128..512 sequences; 64-row tiles for
# short sequences (fewer wasted rows) and when 128 rows leave too few programs to fill 132 SMs.
ATTENTION_GPU_CONFIGS = [
    _attn_config(128, 64, 8, 3),
    _attn_config(128, 128, 8, 3),
    _attn_config(128, 64, 4, 3),
    _attn_config(128, 32, 4, 4),
    _attn_config(64, 128, 4, 3),
    _attn_config(64, 64, 4, 3),
    _attn_config(64, 32, 4, 4),
    _attn_config(32, 32, 4, 4),
]
ATTENTION_INTERPRETER_CONFIG = _attn_config(32, 16, 4, 1)


def _prune_attention_configs(configs, named_args, **kwargs):
    """Drop tiles much longer than the sequences, or that overflow shared memory for this dtype / head dim."""
    args = {**named_args, **kwargs}
    elem = args["qkv_ptr"].element_size()
    seq_bucket, block_d = args["SEQ_BUCKET"], args["BLOCK_D"]
    kept = []
    for c in configs:
        bm, bn = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]
        if bm > max(seq_bucket, 32) or bn > max(seq_bucket, 32):
            continue
        if _utils.smem_bytes(c.num_stages, elem, 2 * bn * block_d) + bm * block_d * elem > _utils.SMEM_LIMIT:
            continue
        if elem == 4 and bm * max(bn, block_d) > 128 * 64:  # IEEE fp32 dots run on FMA units
            continue
        kept.append(c)
    return kept or [min(configs, key=lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"])]


_varlen_attention_fwd_tuned = triton.autotune(
    configs=_utils.configs(ATTENTION_GPU_CONFIGS, ATTENTION_INTERPRETER_CONFIG),
    key=["SEQ_BUCKET", "HEAD_DIM", "INPUT_PRECISION"],
    cache_results=True,  # winners persist in triton's cache dir across processes
    prune_configs_by={"early_config_prune": _prune_attention_configs},
)(_varlen_attention_fwd_kernel)


def _check_qkv(qkv, cu_seqlens, num_heads, dtypes=_utils.FLOAT_DTYPES):
    _utils.check_tensor("qkv", qkv, ndim=2, dtypes=dtypes)
    _utils.check_tensor("cu_seqlens", cu_seqlens, ndim=1, dtypes=(torch.int32,))
    if cu_seqlens.shape[0] < 1:
        raise ValueError("cu_seqlens must have B + 1 >= 1 entries")
    num_heads = _as_int("num_heads", num_heads)
    if num_heads < 1:
        raise ValueError(f"num_heads must be a positive int, got {num_heads!r}")
    T, three_h = qkv.shape
    if three_h % (3 * num_heads) != 0:
        raise ValueError(
            f"qkv must be [T, 3 * H] with H divisible by num_heads={num_heads}, got shape {tuple(qkv.shape)}"
        )
    H = three_h // 3
    return T, H, num_heads, H // num_heads


def _as_int(name, value) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an int, got {type(value).__name__} {value!r}") from None


def varlen_attention(
    qkv: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    num_heads: int,
    scale: Optional[float] = None,
    *,
    out: Optional[torch.Tensor] = None,
    input_precision: Optional[str] = None,
    config: Optional[dict] = None,
) -> torch.Tensor:
    """softmax(Q K^T * scale) V per sequence and head, bidirectional, over packed sequences -> out [T, H].

    qkv: [T, 3H] fp16 / bf16 / fp32, any row stride (a column slice of a wider buffer is fine).
    cu_seqlens: int32 [B+1], 0 = cu[0] <= cu[1] <= ... <= cu[B] = T (the caller's promise, not checked
    on the device). max_seqlen: an int >= the longest sequence (a smaller one leaves rows unwritten).
    scale: default 1 / sqrt(head_dim). out: optional [T, H] buffer (qkv's dtype, unit column stride).
    input_precision: None -> "ieee" for fp32 operands. config: {"BLOCK_M", "BLOCK_N", "num_warps",
    "num_stages"} skips autotuning.
    """
    T, H, num_heads, D = _check_qkv(qkv, cu_seqlens, num_heads)
    max_seqlen = _as_int("max_seqlen", max_seqlen)
    if max_seqlen < 0:
        raise ValueError(f"max_seqlen must be a non-negative int, got {max_seqlen!r}")
    if T > 0 and max_seqlen < 1:
        raise ValueError(f"max_seqlen must be >= 1 when qkv has {T} rows, got {max_seqlen}")
    if scale is None:
        scale = 1.0 / math.sqrt(D)
    else:
        try:
            scale = float(scale)
        except (TypeError, ValueError):
            raise ValueError(f"scale must be a finite float or None, got {scale!r}") from None
        if not math.isfinite(scale):
            raise ValueError(f"scale must be a finite float or None, got {scale!r}")
    if input_precision is None:
        input_precision = "ieee" if qkv.dtype == torch.float32 else "tf32"
    elif input_precision not in ("ieee", "tf32", "tf32x3"):
        raise ValueError(f"input_precision must be None, 'ieee', 'tf32' or 'tf32x3', got {input_precision!r}")
    kernel = _varlen_attention_fwd_kernel if config is not None else _varlen_attention_fwd_tuned
    device = _utils.check_devices(kernel, qkv=qkv, cu_seqlens=cu_seqlens)
    out = _utils.check_out(out, (T, H), qkv.dtype, device, qkv=qkv, cu_seqlens=cu_seqlens)
    batch = cu_seqlens.shape[0] - 1
    if T == 0 or batch == 0:
        return out
    if batch > 65535:
        raise ValueError(f"at most 65535 sequences per call, got {batch}")

    args = (
        qkv, cu_seqlens, out,
        qkv.stride(0), qkv.stride(1),
        out.stride(0),
        H,
        float(scale) * _LOG2E,
        _utils.bucket(max_seqlen),
    )
    block_d = max(16, triton.next_power_of_2(D))  # tl.dot needs every dim >= 16
    flags = dict(HEAD_DIM=D, BLOCK_D=block_d, MASK_D=D != block_d, INPUT_PRECISION=input_precision)

    def grid(meta):
        return (triton.cdiv(max_seqlen, meta["BLOCK_M"]), batch, num_heads)

    if config is None:
        _varlen_attention_fwd_tuned[grid](*args, **flags)
    else:
        cfg = dict(config)
        launch = dict(num_warps=cfg.pop("num_warps", 4), num_stages=cfg.pop("num_stages", 3))
        missing = {"BLOCK_M", "BLOCK_N"} - set(cfg)
        if missing:
            raise ValueError(f"config is missing {sorted(missing)}")
        _varlen_attention_fwd_kernel[grid](*args, **flags, **cfg, **launch)
    return out


def varlen_attention_ref(
    qkv: torch.Tensor,
    cu_seqlens: torch.Tensor,
    num_heads: int,
    scale: Optional[float] = None,
    *,
    compute_dtype: torch.dtype = torch.float32,
    out_dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """Readable reference: per sequence, softmax(Q K^T * scale) V in compute_dtype; cast to out_dtype (qkv's)."""
    T, H, num_heads, D = _check_qkv(qkv, cu_seqlens, num_heads, dtypes=(*_utils.FLOAT_DTYPES, torch.float64))
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    x = qkv.to(compute_dtype)
    out = torch.empty(T, H, dtype=compute_dtype, device=qkv.device)
    bounds = cu_seqlens.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end == start:
            continue
        s = x[start:end]  # [S, 3H]
        q, k, v = (s[:, i * H:(i + 1) * H].reshape(end - start, num_heads, D).transpose(0, 1) for i in range(3))
        p = torch.softmax((q @ k.transpose(-1, -2)) * scale, dim=-1)  # [heads, S, S]
        out[start:end] = (p @ v).transpose(0, 1).reshape(end - start, H)
    return out.to(out_dtype or qkv.dtype)
