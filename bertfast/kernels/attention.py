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
  (max(qk) * s = max(qk * s) exactly, rounding being monotonic) and p = exp2(fma(qk, s, -m)) is one
  fused multiply-add per score, rounded once: the scale costs nothing, logits in the thousands keep
  their precision, and Q is not rounded a second time (folding the scale into an fp16 Q would);
- programs whose query block starts past their sequence end return at once: the empty trailing
  sequences of a CUDA-graph bucket cost a load of two cu_seqlens entries each.
Query rows past the end load as zeros and are never stored. Head dims that are not a power of two
(80, 96) use BLOCK_D = next_power_of_2(D) with a column mask.

HAS_REL_BIAS (MPNet): score[i, j] += table[bucket(j - i), head] (positions within the sequence), each
tile's buckets from its offsets, gathered from the head's column of the L1-resident table into the
dot's initial accumulator: no [B, N, S, S] bias is built. Switched off, none of it compiles.
"""

from __future__ import annotations

import functools
import math
import operator
from typing import Optional

import torch
import triton
import triton.language as tl

from .. import _dtypes
from ..rel_position import MAX_DISTANCE
from ..rel_position import relative_position_bucket as relative_position_bucket_ref
from . import _utils
from .state import LaunchState, launch_state

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
def _relative_bucket(
    rel, NUM_BUCKETS: tl.constexpr, MAX_DISTANCE: tl.constexpr, LOG_SCALE: tl.constexpr, LOG_POW: tl.constexpr
):
    """T5 / MPNet bidirectional bucket of rel = key position - query position (an int32 tensor).

    Half the buckets per direction (keys after the query take the upper half); within a half,
    distances n below EXACT = half / 2 are their own bucket and longer ones are spaced logarithmically
    up to MAX_DISTANCE, past which they share the last bucket:
        EXACT + floor(LOG_SCALE * log2(n / EXACT)),  LOG_SCALE = (half - EXACT) / log2(MAX_DISTANCE / EXACT).
    LOG_POW > 0 (MPNet's 32 / 128: LOG_SCALE = 2, EXACT = 8) when LOG_SCALE is that integer and EXACT a
    power of two: the floor is then read exactly off the float exponent of (n / EXACT)^LOG_POW (a power-of-
    two scaling and a product below 2^24, both exact): no log on the special-function unit, and no edge
    n = EXACT * 2^k can round to the wrong side. Else float32 log2, as the model's own float32 log does.
    """
    HALF: tl.constexpr = NUM_BUCKETS // 2
    EXACT: tl.constexpr = HALF // 2
    n = tl.abs(rel)
    far = tl.minimum(tl.maximum(n, EXACT), MAX_DISTANCE).to(tl.float32) / EXACT  # in [1, MAX_DISTANCE / EXACT]
    if LOG_POW > 0:
        if LOG_POW == 2:
            far = far * far
        large = EXACT + ((far.to(tl.int32, bitcast=True) >> 23) - 127)  # the exponent field: floor(log2(far))
    else:
        large = EXACT + (tl.math.log2(far) * LOG_SCALE).to(tl.int32)
    bucket = tl.where(n < EXACT, n, tl.minimum(large, HALF - 1))
    return tl.where(rel > 0, bucket + HALF, bucket)


# The kernels' long argument lists are grouped by meaning on shared lines; `# fmt: skip` keeps the
# formatter from splitting them one argument per line.
@triton.jit
def _attention_key_blocks(
    acc, l_i, m_i, q,  #
    k_base, v_base, stride_t, stride_c,  # K / V of this head at the sequence's first row
    bias_base, stride_bias_b,  # the head's column of the bias table (HAS_REL_BIAS)
    start, stop, seqlen, qk_scale,  #
    offs_m, offs_n, offs_d, d_ok,  #
    MASK_KEYS: tl.constexpr, MASK_D: tl.constexpr, INPUT_PRECISION: tl.constexpr, BLOCK_N: tl.constexpr,  #
    HAS_REL_BIAS: tl.constexpr, NUM_BUCKETS: tl.constexpr, MAX_DISTANCE: tl.constexpr,  #
    REL_LOG_SCALE: tl.constexpr, REL_LOG_POW: tl.constexpr,  #
):  # fmt: skip
    """Online-softmax update of (acc, l_i, m_i) over key blocks [start, stop) of one sequence.

    m_i is the running row max in scaled log2 units (max of qk * qk_scale); qk_scale > 0.
    """
    if HAS_REL_BIAS:
        bias_to_qk = 1.4426950408889634 / qk_scale  # bias * log2(e) = (bias * bias_to_qk) * qk_scale
    for start_n in range(start, stop, BLOCK_N):
        keys = start_n + offs_n  # [BLOCK_N]
        key_ok = keys < seqlen
        kv_off = keys.to(tl.int64)[:, None] * stride_t + offs_d[None, :] * stride_c  # [BLOCK_N, BLOCK_D]
        k = _load_tile(k_base + kv_off, key_ok, d_ok, MASK_KEYS, MASK_D)
        if HAS_REL_BIAS:
            # The bias / scale is the dot's initial accumulator: the tensor cores add it, the scores stay in
            # the dot's layout, the softmax is the unbiased one. Every bucket is a table row: no mask.
            rel = keys[None, :] - offs_m[:, None]  # [BLOCK_M, BLOCK_N] key - query position
            bucket = _relative_bucket(rel, NUM_BUCKETS, MAX_DISTANCE, REL_LOG_SCALE, REL_LOG_POW)
            bias = tl.load(bias_base + bucket * stride_bias_b).to(tl.float32) * bias_to_qk  # [BLOCK_M, BLOCK_N]
            qk = tl.dot(q, tl.trans(k), bias, input_precision=INPUT_PRECISION)  # QK^T + bias / scale
        else:
            qk = tl.dot(q, tl.trans(k), input_precision=INPUT_PRECISION)  # [BLOCK_M, BLOCK_N], unscaled
        if MASK_KEYS:
            qk = tl.where(key_ok[None, :], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, axis=1) * qk_scale)  # finite: every block holds a real key
        p = tl.math.exp2(tl.fma(qk, qk_scale, -m_new[:, None]))  # one FMA + exp2 per score
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = _load_tile(v_base + kv_off, key_ok, d_ok, MASK_KEYS, MASK_D)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=INPUT_PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _varlen_attention_fwd_kernel(
    qkv_ptr, cu_seqlens_ptr, out_ptr,  #
    stride_qkv_t, stride_qkv_c, stride_out_t,  #
    hidden,  # H = num_heads * HEAD_DIM: offset of K (and 2H of V) within a qkv row
    qk_scale,  # softmax scale * log2(e), > 0
    bias_ptr, stride_bias_b, stride_bias_h,  # the [num_buckets, num_heads] table (HAS_REL_BIAS), else unused
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,  #
    MASK_D: tl.constexpr,  # HEAD_DIM < BLOCK_D (80, 96): mask the padded head columns
    INPUT_PRECISION: tl.constexpr,  #
    HAS_REL_BIAS: tl.constexpr, NUM_BUCKETS: tl.constexpr, MAX_DISTANCE: tl.constexpr,  #
    REL_LOG_SCALE: tl.constexpr, REL_LOG_POW: tl.constexpr,  #
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,  #
):  # fmt: skip
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
    bias_base = bias_ptr + head * stride_bias_h if HAS_REL_BIAS else bias_ptr

    q_off = offs_m.to(tl.int64)[:, None] * stride_qkv_t + offs_d[None, :] * stride_qkv_c
    q = _load_tile(q_base + q_off, q_ok, d_ok, True, MASK_D)  # [BLOCK_M, BLOCK_D]

    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)

    full_end = (seqlen // BLOCK_N) * BLOCK_N
    acc, l_i, m_i = _attention_key_blocks(  # interior key blocks: no key mask
        acc, l_i, m_i, q,  #
        k_base, v_base, stride_qkv_t, stride_qkv_c, bias_base, stride_bias_b,  #
        0, full_end, seqlen, qk_scale, offs_m, offs_n, offs_d, d_ok,  #
        False, MASK_D, INPUT_PRECISION, BLOCK_N, HAS_REL_BIAS, NUM_BUCKETS, MAX_DISTANCE, REL_LOG_SCALE, REL_LOG_POW,  #
    )  # fmt: skip
    acc, l_i, m_i = _attention_key_blocks(  # the ragged tail block, if any (0 or 1 iteration)
        acc, l_i, m_i, q,  #
        k_base, v_base, stride_qkv_t, stride_qkv_c, bias_base, stride_bias_b,  #
        full_end, seqlen, seqlen, qk_scale, offs_m, offs_n, offs_d, d_ok,  #
        True, MASK_D, INPUT_PRECISION, BLOCK_N, HAS_REL_BIAS, NUM_BUCKETS, MAX_DISTANCE, REL_LOG_SCALE, REL_LOG_POW,  #
    )  # fmt: skip

    acc = acc / l_i[:, None]
    rows = (seq_start + offs_m).to(tl.int64)
    o_ptrs = out_ptr + rows[:, None] * stride_out_t + (head_col + offs_d)[None, :]
    tl.store(o_ptrs, acc.to(out_ptr.dtype.element_ty), mask=q_ok[:, None] & d_ok[None, :])


# --------------------------------------------------------------------------------------------------
# Launch configs: the device's launch state (a committed or tuned winner, under KERNEL) or the one
# heuristic, per key (SEQ_BUCKET = max_seqlen rounded up to a power of two >= 16, HEAD_DIM,
# INPUT_PRECISION, dtype name, HAS_REL_BIAS).
# --------------------------------------------------------------------------------------------------
KERNEL = "varlen_attention"

# The one small config the interpreter runs: 70-token sequences then cross several query and key
# blocks, which the tests rely on.
INTERPRETER_CONFIG = {"BLOCK_M": 32, "BLOCK_N": 16, "num_warps": 4, "num_stages": 1}

_DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}

# (BLOCK_M, BLOCK_N, num_warps, num_stages) that `bertfast tune` times for a key (pruned per key);
# one line of tiles per BLOCK_M.
_GPU_TILES = [
    (128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 4, 3), (128, 32, 4, 4),
    (64, 128, 4, 3), (64, 64, 4, 3), (64, 32, 4, 4),
    (32, 32, 4, 2), (16, 16, 2, 2),
]  # fmt: skip


def _block_d(head_dim: int) -> int:
    return _utils.bucket(head_dim)  # the next power of two, at least 16: tl.dot needs every dim >= 16


def _fits(config: dict, head_dim: int, elem_bytes: int) -> bool:
    """Whether the K / V pipeline stages plus the Q tile (what Triton keeps in shared memory) fit."""
    bd = _block_d(head_dim)
    bm, bn = config["BLOCK_M"], config["BLOCK_N"]
    smem = _utils.smem_bytes(config["num_stages"], elem_bytes, 2 * bn * bd) + bm * bd * elem_bytes
    return smem <= _utils.SMEM_LIMIT


def heuristic_config(key: tuple, interpreted: Optional[bool] = None) -> dict:
    """The config of a key nobody tuned: deterministic, from the sizes alone (`interpreted`: for the
    interpreter, default: whether it is on).

    - fp16 / bf16, sequences of 256+: 128 query rows x 64 keys on 8 warps (FA2's tile for D <= 128);
    - 64..128: 64 x 64 on 4 warps, twice the programs of 128-row tiles for the short batches;
    - 16 / 32: one tile covers the whole sequence (16 x 16 on 2 warps, 32 x 32 on 4);
    - fp32 (IEEE dots on the FMA units): small tiles, 64 x 32 at most.
    Pipelining depth 3 when there are at least four key blocks to stream, else 2, lowered until the
    stages fit the shared memory of one block. Under the interpreter: INTERPRETER_CONFIG.
    """
    if _utils.interpreting() if interpreted is None else interpreted:
        return dict(INTERPRETER_CONFIG)
    seq_bucket, head_dim, _, dtype_name, _ = key
    elem_bytes = _DTYPE_BYTES[dtype_name]
    if elem_bytes >= 4:
        bm, bn = min(64, seq_bucket), min(32, seq_bucket)
        warps = 4 if bm >= 32 else 2
    elif seq_bucket >= 256:
        bm, bn, warps = 128, 64, 8
    elif seq_bucket >= 64:
        bm, bn, warps = 64, 64, 4
    else:
        bm = bn = seq_bucket
        warps = 4 if bm >= 32 else 2
    cfg = {"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": warps, "num_stages": 3 if seq_bucket >= 4 * bn else 2}
    while cfg["num_stages"] > 1 and not _fits(cfg, head_dim, elem_bytes):
        cfg["num_stages"] -= 1
    return cfg


def CANDIDATE_CONFIGS(key: tuple, interpreted: Optional[bool] = None) -> list[dict]:
    """The configs worth timing for a key, the heuristic's pick first (so tuning can only keep or beat it):
    the tiles no longer than the sequences (beyond 32), that fit shared memory, and for fp32 (FMA-unit
    dots) no larger than 128 x 64 scores."""
    pick = heuristic_config(key, interpreted)
    if _utils.interpreting() if interpreted is None else interpreted:
        return [pick]
    seq_bucket, head_dim, _, dtype_name, _ = key
    elem_bytes = _DTYPE_BYTES[dtype_name]
    longest = max(seq_bucket, 32)
    out = [pick]
    for bm, bn, warps, stages in _GPU_TILES:
        cfg = {"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": warps, "num_stages": stages}
        if cfg == pick or bm > longest or bn > longest or not _fits(cfg, head_dim, elem_bytes):
            continue
        if elem_bytes == 4 and bm * max(bn, _block_d(head_dim)) > 128 * 64:
            continue
        out.append(cfg)
    return out


def _tune(state: LaunchState, key: tuple, launch) -> dict:
    """`bertfast tune` (inside `state.autotuning()`): time each candidate on this call's inputs and record
    the fastest with put_config. A key that already has a measured config (committed, tuned) keeps it."""
    if state.config_source(KERNEL, key) == "table":
        return state.config(KERNEL, key, heuristic_config)
    candidates = CANDIDATE_CONFIGS(key)
    best = candidates[0]
    if len(candidates) > 1:
        import triton.testing  # CUDA-event timing, needed by `bertfast tune` only

        times = [triton.testing.do_bench(lambda cfg=cfg: launch(cfg)) for cfg in candidates]
        best = candidates[times.index(min(times))]
    state.put_config(KERNEL, key, best)
    return best


def config_key(max_seqlen: int, head_dim: int, input_precision: str, dtype: torch.dtype, has_rel_bias: bool) -> tuple:
    """The launch-config key of a call: (SEQ_BUCKET, HEAD_DIM, INPUT_PRECISION, dtype name, HAS_REL_BIAS)."""
    return (_utils.bucket(max_seqlen), head_dim, input_precision, _dtypes.dtype_name(dtype), has_rel_bias)


def _as_int(name, value) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an int, got {type(value).__name__} {value!r}") from None


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


def _check_rel_bias(rel_bias, max_distance, num_heads: int, dtypes=_utils.FLOAT_DTYPES) -> tuple[int, int]:
    """(num_buckets, max_distance) of a [num_buckets, num_heads] relative-position bias table."""
    _utils.check_tensor("rel_bias", rel_bias, ndim=2, dtypes=dtypes)
    num_buckets, heads = rel_bias.shape
    if heads != num_heads or num_buckets < 4:
        raise ValueError(
            f"rel_bias must be [num_buckets >= 4, num_heads={num_heads}], got shape {tuple(rel_bias.shape)}"
        )
    max_distance = _as_int("max_distance", max_distance)
    if max_distance <= num_buckets // 4:  # the log buckets span (num_buckets // 4, max_distance]
        raise ValueError(f"max_distance must be an int > num_buckets // 4 = {num_buckets // 4}, got {max_distance}")
    return num_buckets, max_distance


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


def _check_config(config) -> dict:
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict with BLOCK_M and BLOCK_N, got {type(config).__name__}")
    missing, unknown = {"BLOCK_M", "BLOCK_N"} - set(config), set(config) - set(INTERPRETER_CONFIG)
    if missing or unknown:
        raise ValueError(f"config is missing {sorted(missing)} or has unknown entries {sorted(unknown)}")
    return config


# What the kernel is compiled with when there is no bias: the switch off, the bucket parameters fixed.
_NO_REL_BIAS = dict(HAS_REL_BIAS=False, NUM_BUCKETS=0, MAX_DISTANCE=0, REL_LOG_SCALE=0.0, REL_LOG_POW=0)


@functools.cache
def _rel_bias_flags(num_buckets: int, max_distance: int) -> dict:
    """The kernel's constexprs for a bias table of num_buckets rows (see _relative_bucket); read-only."""
    exact = num_buckets // 4
    log_scale = (num_buckets // 2 - exact) / math.log2(max_distance / exact)
    exact_pow = log_scale in (1.0, 2.0) and exact & (exact - 1) == 0 and max_distance**2 < 2**24
    flags = dict(HAS_REL_BIAS=True, NUM_BUCKETS=num_buckets, MAX_DISTANCE=max_distance, REL_LOG_SCALE=log_scale)
    return dict(flags, REL_LOG_POW=int(log_scale) if exact_pow else 0)


def varlen_attention(
    qkv: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    num_heads: int,
    scale: Optional[float] = None,
    *,
    rel_bias: Optional[torch.Tensor] = None,
    max_distance: int = MAX_DISTANCE,
    out: Optional[torch.Tensor] = None,
    input_precision: Optional[str] = None,
    config: Optional[dict] = None,
) -> torch.Tensor:
    """softmax(Q K^T * scale [+ bias]) V per sequence and head, bidirectional, over packed sequences -> out [T, H].

    qkv: [T, 3H] fp16 / bf16 / fp32, any row stride. cu_seqlens: int32 [B+1], 0 = cu[0] <= ... <= cu[B] = T
    (the caller's promise). max_seqlen: >= the longest sequence (a smaller one leaves rows unwritten); the
    grid and config follow it: pass the batch's (or graph bucket's) own. scale: > 0, default 1 / sqrt(D).
    rel_bias: MPNet's [num_buckets, num_heads] table (any float dtype, read as fp32): score[i, j] +=
    rel_bias[bucket(j - i), head], T5's bidirectional buckets out to max_distance, positions within each
    sequence. out: optional [T, H] (qkv's dtype, unit column stride). input_precision: None -> "ieee" for
    fp32, "tf32" else. The checks, then launch_varlen_attention: its config is the launch state's for the
    key (CANDIDATE_CONFIGS timed inside the state's `autotuning()`); `config` overrides it for this call.
    """
    T, H, num_heads, D = _check_qkv(qkv, cu_seqlens, num_heads)
    max_seqlen = _as_int("max_seqlen", max_seqlen)
    if max_seqlen < 0:
        raise ValueError(f"max_seqlen must be a non-negative int, got {max_seqlen!r}")
    if T > 0 and max_seqlen < 1:
        raise ValueError(f"max_seqlen must be >= 1 when qkv has {T} rows, got {max_seqlen}")
    scale = _check_scale(scale, D)
    input_precision = _utils.check_input_precision(input_precision, qkv.dtype)
    if config is not None:
        _check_config(config)
    if rel_bias is not None:
        max_distance = _check_rel_bias(rel_bias, max_distance, num_heads)[1]
    device = _utils.check_devices(_varlen_attention_fwd_kernel, qkv=qkv, cu_seqlens=cu_seqlens, rel_bias=rel_bias)
    out = _utils.check_out(out, (T, H), qkv.dtype, device, qkv=qkv, cu_seqlens=cu_seqlens)
    if T == 0 or cu_seqlens.shape[0] == 1:
        return out
    if cu_seqlens.shape[0] - 1 > 65535:
        raise ValueError(f"at most 65535 sequences per call, got {cu_seqlens.shape[0] - 1}")
    args = (qkv, cu_seqlens, max_seqlen, num_heads, scale, rel_bias, max_distance, out, input_precision)
    return launch_varlen_attention(*args, config)


def launch_varlen_attention(
    qkv, cu_seqlens, max_seqlen: int, num_heads: int, scale: float,  # the problem
    rel_bias, max_distance: int, out, input_precision: str, config: Optional[dict] = None,  # its options
) -> torch.Tensor:  # fmt: skip
    """The launch alone, on operands varlen_attention's checks pass (T >= 1, B >= 1): what the model
    calls, its inputs validated once at its boundary. Same config and numbers as varlen_attention."""
    H = qkv.shape[1] // 3
    D = H // num_heads
    batch = cu_seqlens.shape[0] - 1
    bias_args, bias_flags = (None, 0, 0), _NO_REL_BIAS
    if rel_bias is not None:
        bias_flags = _rel_bias_flags(rel_bias.shape[0], max_distance)
        bias_args = (rel_bias, rel_bias.stride(0), rel_bias.stride(1))
    block_d = _block_d(D)

    def launch(cfg: dict) -> None:
        grid = (-(-max_seqlen // cfg["BLOCK_M"]), num_heads, batch)  # cdiv without triton's wrapper
        _varlen_attention_fwd_kernel[grid](
            qkv, cu_seqlens, out, qkv.stride(0), qkv.stride(1), out.stride(0), H, scale * _LOG2E, *bias_args,  #
            HEAD_DIM=D, BLOCK_D=block_d, MASK_D=D != block_d, INPUT_PRECISION=input_precision, **bias_flags, **cfg,  #
        )  # fmt: skip

    if config is None:
        state = launch_state(qkv.device)
        key = config_key(max_seqlen, D, input_precision, qkv.dtype, rel_bias is not None)
        config = _tune(state, key, launch) if state.autotune else state.config(KERNEL, key, heuristic_config)
    launch(config)
    return out


def varlen_attention_ref(
    qkv: torch.Tensor,
    cu_seqlens: torch.Tensor,
    num_heads: int,
    scale: Optional[float] = None,
    *,
    rel_bias: Optional[torch.Tensor] = None,
    max_distance: int = MAX_DISTANCE,
    compute_dtype: torch.dtype = torch.float32,
    out_dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """Readable reference: per sequence, softmax(Q K^T * scale + bias) V in compute_dtype; cast to out_dtype (qkv's)."""
    dtypes = (*_utils.FLOAT_DTYPES, torch.float64)
    T, H, num_heads, D = _check_qkv(qkv, cu_seqlens, num_heads, dtypes=dtypes)
    if rel_bias is not None:
        num_buckets, max_distance = _check_rel_bias(rel_bias, max_distance, num_heads, dtypes=dtypes)
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    x = qkv.to(compute_dtype)
    out = torch.empty(T, H, dtype=compute_dtype, device=qkv.device)
    bounds = cu_seqlens.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end == start:
            continue
        s = x[start:end]  # [S, 3H]
        q, k, v = (s[:, i * H : (i + 1) * H].reshape(end - start, num_heads, D).transpose(0, 1) for i in range(3))
        scores = (q @ k.transpose(-1, -2)) * scale  # [heads, S, S]
        if rel_bias is not None:
            pos = torch.arange(end - start, device=qkv.device)
            bucket = relative_position_bucket_ref(pos[None, :] - pos[:, None], num_buckets, max_distance)  # [S, S]
            scores = scores + rel_bias.to(compute_dtype)[bucket].permute(2, 0, 1)  # + [heads, S, S]
        out[start:end] = (torch.softmax(scores, dim=-1) @ v).transpose(0, 1).reshape(end - start, H)
    return out.to(out_dtype or qkv.dtype)
