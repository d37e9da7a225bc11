"""Bidirectional flash attention over packed variable-length sequences, reading Q, K, V in place.

    qkv [T, 3H] (the fused QKV projection: Q = cols [0, H), K = [H, 2H), V = [2H, 3H); head h at
    cols h*D:(h+1)*D of each third) + cu_seqlens [B+1] -> out [T, H] (head h at cols h*D:(h+1)*D)

Grid: (query blocks of max_seqlen, num_heads, B). Program ids run fastest along axis 0, so the query
blocks of one (sequence, head) run side by side and then the other heads of the same sequence: the
sequence's rows of qkv are read from device memory about once and re-read from L2.

A program loads its BLOCK_M query rows of one head of one sequence, then streams that sequence's
keys / values in BLOCK_N blocks with an online softmax in fp32:
- only the key blocks inside the sequence are visited (no fully masked block is ever loaded); the
  interior blocks run unmasked, the one ragged tail block masks keys past the end with -inf;
- the softmax runs in base 2: with s = scale * log2(e) > 0, the row max is taken on the raw scores
  (max(qk) * s = max(qk * s) exactly, rounding being monotonic) and p = exp2(qk * s - m) is one fused
  multiply-add per score: the scale costs nothing, and Q is not rounded a second time (folding the
  scale into an fp16 Q would);
- programs whose query block starts past their sequence end return at once: the empty trailing
  sequences of a CUDA-graph bucket cost a load of two cu_seqlens entries each.
Query rows past the end load as zeros and are never stored. Head dims that are not a power of two
(80, 96) use BLOCK_D = next_power_of_2(D) with a column mask.

Floors (H100 SXM datasheet: 3.35 TB/s, 989 dense fp16 TFLOP/s, 16 exp2 per SM per clock ~ 3.7e12/s),
BERT-base 12 heads x 64, fp16, dense batches (4 * S^2 * D flop per sequence and head):
- 32 x 128 (T = 4096): 1.6 GFLOP -> 1.6 us on the tensor cores; 6.3 M exp2 -> 1.7 us; bytes: qkv
  read once 18.9 MB + out 6.3 MB = 25.2 MB -> 7.5 us. Bound by memory: floor ~7.5 us, against
  cuDNN 18 us and this kernel 28 us measured (shared/GPU-BASELINE.md).
- 32 x 512 (T = 16384): 25.8 GFLOP -> 26 us; 101 M exp2 -> 27 us; bytes 75.5 + 25.2 MB = 101 MB ->
  30 us. All three within 15% of one another: floor ~30 us, and only a kernel that overlaps the
  exp2 with the tensor-core work and the loads gets near it; cuDNN 73 us, this kernel 88 us.
"""

from __future__ import annotations

import math
import operator
from typing import Optional

import torch
import triton
import triton.language as tl

from . import _utils
from ._configs import ConfigTable, autotune_requested, from_triton, split_launch

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
    acc,
    l_i,
    m_i,
    q,
    k_base,
    v_base,  # pointers to this head's K / V column 0 at the sequence's first row
    stride_t,
    stride_c,
    start,
    stop,
    seqlen,
    qk_scale,
    offs_n,
    offs_d,
    d_ok,
    MASK_KEYS: tl.constexpr,
    MASK_D: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Online-softmax update of (acc, l_i, m_i) over key blocks [start, stop) of one sequence.

    m_i is the running row max in scaled log2 units (max of qk * qk_scale); qk_scale > 0.
    """
    for start_n in range(start, stop, BLOCK_N):
        keys = start_n + offs_n  # [BLOCK_N]
        key_ok = keys < seqlen
        kv_off = keys.to(tl.int64)[:, None] * stride_t + offs_d[None, :] * stride_c  # [BLOCK_N, BLOCK_D]
        k = _load_tile(k_base + kv_off, key_ok, d_ok, MASK_KEYS, MASK_D)
        qk = tl.dot(q, tl.trans(k), input_precision=INPUT_PRECISION)  # [BLOCK_M, BLOCK_N], unscaled
        if MASK_KEYS:
            qk = tl.where(key_ok[None, :], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, axis=1) * qk_scale)  # finite: every block holds a real key
        p = tl.math.exp2(qk * qk_scale - m_new[:, None])  # one FMA + exp2 per score
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = _load_tile(v_base + kv_off, key_ok, d_ok, MASK_KEYS, MASK_D)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=INPUT_PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _varlen_attention_fwd_kernel(
    qkv_ptr,
    cu_seqlens_ptr,
    out_ptr,
    stride_qkv_t,
    stride_qkv_c,
    stride_out_t,
    hidden,  # H = num_heads * HEAD_DIM: offset of K (and 2H of V) within a qkv row
    qk_scale,  # softmax scale * log2(e), > 0
    SEQ_BUCKET,  # the autotuner's key only (max_seqlen rounded up to a power of two)
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    MASK_D: tl.constexpr,  # HEAD_DIM < BLOCK_D (80, 96): mask the padded head columns
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    block_m = tl.program_id(0)
    head = tl.program_id(1)
    seq = tl.program_id(2)
    seq_start = tl.load(cu_seqlens_ptr + seq)
    seqlen = tl.load(cu_seqlens_ptr + seq + 1) - seq_start
    if block_m * BLOCK_M >= seqlen:  # past the end of this sequence (all of an empty one)
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
    acc, l_i, m_i = _attention_key_blocks(  # interior key blocks: no key mask
        acc,
        l_i,
        m_i,
        q,
        k_base,
        v_base,
        stride_qkv_t,
        stride_qkv_c,
        0,
        full_end,
        seqlen,
        qk_scale,
        offs_n,
        offs_d,
        d_ok,
        False,
        MASK_D,
        INPUT_PRECISION,
        BLOCK_N,
    )
    acc, l_i, m_i = _attention_key_blocks(  # the ragged tail block, if any (0 or 1 iteration)
        acc,
        l_i,
        m_i,
        q,
        k_base,
        v_base,
        stride_qkv_t,
        stride_qkv_c,
        full_end,
        seqlen,
        seqlen,
        qk_scale,
        offs_n,
        offs_d,
        d_ok,
        True,
        MASK_D,
        INPUT_PRECISION,
        BLOCK_N,
    )

    acc = acc / l_i[:, None]
    rows = (seq_start + offs_m).to(tl.int64)
    o_ptrs = out_ptr + rows[:, None] * stride_out_t + (head_col + offs_d)[None, :]
    tl.store(o_ptrs, acc.to(out_ptr.dtype.element_ty), mask=q_ok[:, None] & d_ok[None, :])


# --------------------------------------------------------------------------------------------------
# Launch configs: a table lookup (known winners, else a deterministic heuristic), no autotuning.
# --------------------------------------------------------------------------------------------------
def _block_d(head_dim: int) -> int:
    return max(16, triton.next_power_of_2(head_dim))  # tl.dot needs every dim >= 16


def _smem_estimate(config: dict, head_dim: int, elem_bytes: int) -> int:
    """Shared memory of the K / V pipeline plus the Q tile (what Triton stages), in bytes."""
    bd = _block_d(head_dim)
    bm, bn = config["BLOCK_M"], config["BLOCK_N"]
    return _utils.smem_bytes(config["num_stages"], elem_bytes, 2 * bn * bd) + bm * bd * elem_bytes


def gpu_attention_config(seq_bucket: int, head_dim: int, elem_bytes: int) -> dict:
    """The heuristic's config for a compiled GPU launch; deterministic in (bucket, head dim, dtype size).

    Leads to be measured (`bertfast tune` records the winners, which replace these):
    - fp16 / bf16, sequences of 256+: 128 query rows x 64 keys on 8 warps (FA2's tile for D <= 128);
    - 64..128: 64 x 64 on 4 warps, twice the programs of 128-row tiles for the short batches;
    - 16 / 32: one tile covers the whole sequence (16 x 16 on 2 warps, 32 x 32 on 4);
    - fp32 (IEEE dots on the FMA units): small tiles, 64 x 32 at most.
    Pipelining depth 3 when there are at least four key blocks to stream, else 2, lowered until the
    K / V stages fit the shared memory of one block (Hopper; the same holds on Ampere's 164 KB for
    the fp16 tiles chosen).
    """
    if elem_bytes >= 4:
        bm, bn = min(64, max(16, seq_bucket)), min(32, max(16, seq_bucket))
        warps = 4 if bm >= 32 else 2
    elif seq_bucket >= 256:
        bm, bn, warps = 128, 64, 8
    elif seq_bucket >= 64:
        bm, bn, warps = 64, 64, 4
    else:
        bm = bn = max(16, seq_bucket)
        warps = 4 if bm >= 32 else 2
    cfg = {"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": warps, "num_stages": 3 if seq_bucket >= 4 * bn else 2}
    while cfg["num_stages"] > 1 and _smem_estimate(cfg, head_dim, elem_bytes) > _utils.SMEM_LIMIT:
        cfg["num_stages"] -= 1
    return cfg


# The one small config the interpreter runs (and the autotuner's whole list there): 70-token
# sequences then cross several query and key blocks, which the tests rely on.
ATTENTION_INTERPRETER_CONFIG = {"BLOCK_M": 32, "BLOCK_N": 16, "num_warps": 4, "num_stages": 1}

_DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}


def _attention_heuristic(key: tuple, args: dict) -> dict:
    """ConfigTable heuristic. key = (SEQ_BUCKET, HEAD_DIM, INPUT_PRECISION, dtype name)."""
    if _utils.interpreting():
        return dict(ATTENTION_INTERPRETER_CONFIG)
    seq_bucket, head_dim, _, dtype_name = key
    return gpu_attention_config(seq_bucket, head_dim, _DTYPE_BYTES[dtype_name])


ATTENTION_CONFIGS = ConfigTable("varlen_attention", _attention_heuristic)


def _attn_config(bm, bn, warps, stages):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=warps, num_stages=stages)


# Triton's autotuner (autotune=True, `bertfast tune`) searches these; it includes every tile the
# heuristic picks, so tuning can only keep or beat the heuristic.
ATTENTION_GPU_CONFIGS = [
    _attn_config(128, 64, 8, 3),
    _attn_config(128, 128, 8, 3),
    _attn_config(128, 64, 4, 3),
    _attn_config(128, 32, 4, 4),
    _attn_config(64, 128, 4, 3),
    _attn_config(64, 64, 4, 3),
    _attn_config(64, 64, 4, 2),
    _attn_config(64, 32, 4, 4),
    _attn_config(64, 32, 4, 2),
    _attn_config(32, 32, 4, 4),
    _attn_config(32, 32, 4, 2),
    _attn_config(16, 16, 2, 2),
]


def _prune_attention_configs(configs, named_args, **kwargs):
    """Drop tiles much longer than the sequences, or that overflow shared memory for this dtype / head dim."""
    args = {**named_args, **kwargs}
    elem = args["qkv_ptr"].element_size()
    seq_bucket, head_dim = args["SEQ_BUCKET"], args["HEAD_DIM"]
    kept = []
    for c in configs:
        bm, bn = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]
        if bm > max(seq_bucket, 32) or bn > max(seq_bucket, 32):
            continue
        if _smem_estimate(from_triton(c), head_dim, elem) > _utils.SMEM_LIMIT:
            continue
        if elem == 4 and bm * max(bn, _block_d(head_dim)) > 128 * 64:  # IEEE fp32 dots run on FMA units
            continue
        kept.append(c)
    return kept or [min(configs, key=lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"])]


_varlen_attention_fwd_tuned = triton.autotune(
    configs=_utils.configs(ATTENTION_GPU_CONFIGS, _attn_config(*ATTENTION_INTERPRETER_CONFIG.values())),
    key=["SEQ_BUCKET", "HEAD_DIM", "INPUT_PRECISION"],
    cache_results=True,  # timings persist in triton's cache dir across processes
    prune_configs_by={"early_config_prune": _prune_attention_configs},
)(_varlen_attention_fwd_kernel)


# Per config key: (the table's config dict, its constexpr kwargs, its launch kwargs). Rebuilt only when
# the table answers with another dict (after a put()), so a hot launch does one lookup and one `is`.
_LAUNCH_MEMO: dict[tuple, tuple[dict, dict, dict]] = {}


def _launch_params(key: tuple) -> tuple[dict, dict]:
    """(BLOCK_M / BLOCK_N / ... constexprs, num_warps / num_stages) for a config key, memoised."""
    cfg = ATTENTION_CONFIGS.lookup(key)
    hit = _LAUNCH_MEMO.get(key)
    if hit is None or hit[0] is not cfg:
        meta, launch = split_launch(cfg)
        missing = {"BLOCK_M", "BLOCK_N"} - set(meta)
        if missing:
            raise ValueError(f"the varlen_attention config for {key} is missing {sorted(missing)}: {cfg}")
        hit = (cfg, meta, launch)
        _LAUNCH_MEMO[key] = hit
    return hit[1], hit[2]


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


def _check_scale(scale, head_dim: int) -> float:
    if scale is None:
        return 1.0 / math.sqrt(head_dim)
    try:
        value = float(scale)
    except (TypeError, ValueError):
        raise ValueError(f"scale must be a positive finite float or None, got {scale!r}") from None
    if not (math.isfinite(value) and value > 0):  # > 0: the kernel takes the row max on unscaled scores
        raise ValueError(f"scale must be a positive finite float or None, got {scale!r}")
    return value


def _check_config(config) -> tuple[dict, dict]:
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict with BLOCK_M and BLOCK_N, got {type(config).__name__}")
    meta, launch = split_launch(config)
    missing = {"BLOCK_M", "BLOCK_N"} - set(meta)
    if missing:
        raise ValueError(f"config is missing {sorted(missing)}")
    return meta, launch


def config_key(max_seqlen: int, head_dim: int, input_precision: str, dtype: torch.dtype) -> tuple:
    """ATTENTION_CONFIGS' key for a launch: (SEQ_BUCKET, HEAD_DIM, INPUT_PRECISION, dtype name)."""
    return (_utils.bucket(max_seqlen), head_dim, input_precision, str(dtype).replace("torch.", ""))


# (max_seqlen, head_dim, input_precision, dtype) -> (config key, head-dim constexprs): what depends only
# on the call's sizes is worked out once per size (triton.next_power_of_2 alone costs microseconds).
_KEY_MEMO: dict[tuple, tuple[tuple, dict]] = {}


def _key_and_flags(max_seqlen: int, head_dim: int, input_precision: str, dtype: torch.dtype) -> tuple[tuple, dict]:
    sizes = (max_seqlen, head_dim, input_precision, dtype)
    hit = _KEY_MEMO.get(sizes)
    if hit is None:
        block_d = _block_d(head_dim)
        flags = dict(HEAD_DIM=head_dim, BLOCK_D=block_d, MASK_D=head_dim != block_d, INPUT_PRECISION=input_precision)
        hit = (config_key(max_seqlen, head_dim, input_precision, dtype), flags)
        _KEY_MEMO[sizes] = hit
    return hit


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
    autotune: bool = False,
) -> torch.Tensor:
    """softmax(Q K^T * scale) V per sequence and head, bidirectional, over packed sequences -> out [T, H].

    qkv: [T, 3H] fp16 / bf16 / fp32, any row stride (a column slice of a wider buffer is fine).
    cu_seqlens: int32 [B+1], 0 = cu[0] <= cu[1] <= ... <= cu[B] = T (the caller's promise, not checked
    on the device). max_seqlen: an int >= the longest sequence (a smaller one leaves rows unwritten);
    the grid and the config follow it, so pass the batch's (or CUDA-graph bucket's) own longest length.
    scale: > 0, default 1 / sqrt(head_dim). out: optional [T, H] buffer (qkv's dtype, unit column
    stride). input_precision: None -> "ieee" for fp32 operands, "tf32" (ignored by fp16 / bf16 dots) else.

    The launch config comes from `ATTENTION_CONFIGS` (a tuned or committed winner for the key, else
    the deterministic heuristic); nothing is benchmarked. `config` ({"BLOCK_M", "BLOCK_N",
    "num_warps", "num_stages"}) overrides it for this call. `autotune=True` (or a call inside
    `_configs.autotuning()`, what `bertfast tune` does) runs Triton's autotuner instead and records
    its winner in ATTENTION_CONFIGS.
    """
    T, H, num_heads, D = _check_qkv(qkv, cu_seqlens, num_heads)
    max_seqlen = _as_int("max_seqlen", max_seqlen)
    if max_seqlen < 0:
        raise ValueError(f"max_seqlen must be a non-negative int, got {max_seqlen!r}")
    if T > 0 and max_seqlen < 1:
        raise ValueError(f"max_seqlen must be >= 1 when qkv has {T} rows, got {max_seqlen}")
    scale = _check_scale(scale, D)
    if input_precision is None:
        input_precision = "ieee" if qkv.dtype == torch.float32 else "tf32"
    elif input_precision not in ("ieee", "tf32", "tf32x3"):
        raise ValueError(f"input_precision must be None, 'ieee', 'tf32' or 'tf32x3', got {input_precision!r}")
    explicit = _check_config(config) if config is not None else None
    device = _utils.check_devices(_varlen_attention_fwd_kernel, qkv=qkv, cu_seqlens=cu_seqlens)
    out = _utils.check_out(out, (T, H), qkv.dtype, device, qkv=qkv, cu_seqlens=cu_seqlens)
    batch = cu_seqlens.shape[0] - 1
    if T == 0 or batch == 0:
        return out
    if batch > 65535:
        raise ValueError(f"at most 65535 sequences per call, got {batch}")

    key, flags = _key_and_flags(max_seqlen, D, input_precision, qkv.dtype)
    args = (
        qkv,
        cu_seqlens,
        out,
        qkv.stride(0),
        qkv.stride(1),
        out.stride(0),
        H,
        scale * _LOG2E,
        key[0],
    )

    if explicit is None and (autotune or autotune_requested()):

        def grid(meta):
            return (triton.cdiv(max_seqlen, meta["BLOCK_M"]), num_heads, batch)

        _varlen_attention_fwd_tuned[grid](*args, **flags)
        ATTENTION_CONFIGS.put(key, from_triton(_varlen_attention_fwd_tuned.best_config))
        return out

    meta, launch = explicit if explicit is not None else _launch_params(key)
    grid = (-(-max_seqlen // meta["BLOCK_M"]), num_heads, batch)  # cdiv without triton's wrapper
    _varlen_attention_fwd_kernel[grid](*args, **flags, **meta, **launch)
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
        q, k, v = (s[:, i * H : (i + 1) * H].reshape(end - start, num_heads, D).transpose(0, 1) for i in range(3))
        p = torch.softmax((q @ k.transpose(-1, -2)) * scale, dim=-1)  # [heads, S, S]
        out[start:end] = (p @ v).transpose(0, 1).reshape(end - start, H)
    return out.to(out_dtype or qkv.dtype)
