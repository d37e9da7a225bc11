"""Split-K linear for a handful of rows (batch-1 latency): spread the weight read over every SM.

At M <= 256 tokens a BERT GEMM is a weight-read problem: a plain tiling gives (M / BLOCK_M) x
(N / BLOCK_N) programs, a few dozen on a 132-SM GPU, each streaming a long strip of the weight.
Here K is also cut into SPLIT_K ranges, so tiles x splits programs (2-4 per SM) read the weight
at once, then a second kernel adds the partial sums and applies the epilogue:

    partial:  x [M, K] @ weight [N, K]^T over K range s -> fp32 workspace [SPLIT_K, M, N]
              grid (tiles_m * tiles_n, SPLIT_K); range s = [s K_PER_SPLIT, (s+1) K_PER_SPLIT)
    reduce:   out [M, N] = act(sum_s workspace[s] + bias) + residual, one store in x's dtype
              grid cdiv(M N, BLOCK); the splits are added in order s = 0, 1, ... (deterministic,
              no atomics: the same inputs give the same bits every run)

K_PER_SPLIT is a multiple of BLOCK_K, so only the last split can end in a partial K block.
Configs come from the device's launch state (kernel "linear_splitk", keyed on the shape and the SM count), else a
heuristic that aims at 2-4 programs per SM; `split_k=` or `config=` override it per call.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .. import _dtypes
from .. import activations as _act
from . import _utils
from ._configs import Config, split_launch
from .epilogue import _apply_activation
from .gemm import _dot_k_range, check_linear_args, fit_smem
from .state import launch_state

KERNEL = "linear_splitk"


@triton.jit(do_not_specialize=["M"])
def _linear_splitk_partial_kernel(
    x_ptr,
    w_ptr,
    ws_ptr,
    M,
    N,
    K,
    K_PER_SPLIT,
    stride_xm,
    stride_xk,
    stride_wn,
    stride_wk,
    INPUT_PRECISION: tl.constexpr,
    EVEN_K: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    split = tl.program_id(1)
    tiles_n = tl.cdiv(N, BLOCK_N)
    pid_m = pid // tiles_n  # neighbouring programs share the x rows, sweep the weight's columns
    pid_n = pid % tiles_n

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M]
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
    rows_in = (offs_m % M).to(tl.int64)  # edge tiles wrap onto valid rows / columns; the store masks
    cols_in = (offs_n % N).to(tl.int64)

    k_start = split * K_PER_SPLIT
    k_end = tl.minimum(k_start + K_PER_SPLIT, K)
    acc = _dot_k_range(
        x_ptr,
        w_ptr,
        rows_in,
        cols_in,
        k_start,
        k_end,
        K,
        stride_xm,
        stride_xk,
        stride_wn,
        stride_wk,
        INPUT_PRECISION,
        EVEN_K,
        BLOCK_M,
        BLOCK_N,
        BLOCK_K,
    )

    # workspace [SPLIT_K, M, N], contiguous fp32
    mask = (offs_m < M)[:, None] & (offs_n < N)[None, :]
    ws_ptrs = ws_ptr + (split * M + offs_m.to(tl.int64))[:, None] * N + offs_n[None, :]
    tl.store(ws_ptrs, acc, mask=mask)


@triton.jit(do_not_specialize=["M"])
def _splitk_reduce_kernel(
    ws_ptr,
    bias_ptr,
    res_ptr,
    out_ptr,
    M,
    N,
    split_k,
    stride_rm,
    stride_rn,
    stride_om,
    HAS_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    ACTIVATION: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # Flat over the M x N outputs: a contiguous stretch of each workspace slice per program.
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)  # [BLOCK]
    mask = offs < M * N
    m = offs // N
    n = offs % N
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    ws_ptrs = ws_ptr + offs
    for _ in range(0, split_k):  # fixed order s = 0, 1, ...: deterministic
        acc += tl.load(ws_ptrs, mask=mask, other=0.0)
        ws_ptrs += M * N
    if HAS_BIAS:
        acc += tl.load(bias_ptr + n, mask=mask, other=0.0).to(tl.float32)
    acc = _apply_activation(acc, ACTIVATION)
    if HAS_RESIDUAL:
        acc += tl.load(res_ptr + m * stride_rm + n * stride_rn, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + m * stride_om + n, acc.to(out_ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------------------------------
# Configs. Key: (M bucket, N, K, INPUT_PRECISION, dtype name, SM count).
# A config: BLOCK_M, BLOCK_N, BLOCK_K, SPLIT_K, num_warps, num_stages.
# --------------------------------------------------------------------------------------------------

MAX_PROGRAMS_PER_SM = 4  # aim: tiles x splits within 2-4 programs per SM
REDUCE_BLOCK = 1024


def _splitk_heuristic(key: tuple) -> Config:
    """Small row tiles (16/32/64 from M), 64-wide columns (32 when that leaves too few programs),
    BLOCK_K 64 (32 for IEEE fp32), then whole K blocks per split so that tiles x splits comes near
    2-4 programs per SM (at most one split per K block)."""
    m_bucket, n, k, precision, dtype, num_sms = key
    interpreted = _utils.is_interpreted(_linear_splitk_partial_kernel)
    bm = 16 if m_bucket <= 16 else 32 if m_bucket <= 32 else 64
    bn = 32 if interpreted else 64
    bk = 32 if interpreted or (dtype == "float32" and precision == "ieee") else 64
    bn = min(bn, max(16, triton.next_power_of_2(n)))
    bk = min(bk, max(16, triton.next_power_of_2(k)))
    k_blocks = triton.cdiv(k, bk)
    most = MAX_PROGRAMS_PER_SM * num_sms
    tiles = triton.cdiv(m_bucket, bm) * triton.cdiv(n, bn)
    if not interpreted and bn > 32 and tiles * k_blocks < most // 2:
        bn //= 2  # more column tiles when even one split per K block would leave SMs idle
        tiles = triton.cdiv(m_bucket, bm) * triton.cdiv(n, bn)
    # The most splits (whole K blocks each) that keep tiles x splits <= MAX_PROGRAMS_PER_SM x SMs. Going
    # from b to b + 1 blocks per split at most halves the programs, so this also lands >= half that.
    blocks_per_split = 1
    while blocks_per_split < k_blocks and tiles * triton.cdiv(k_blocks, blocks_per_split) > most:
        blocks_per_split += 1
    split = triton.cdiv(k_blocks, blocks_per_split)
    config = {
        "BLOCK_M": bm,
        "BLOCK_N": bn,
        "BLOCK_K": bk,
        "SPLIT_K": split,
        "num_warps": 4,
        "num_stages": 1 if interpreted else 4,
    }
    return fit_smem(config, 4 if dtype == "float32" else 2)


def config_key(M: int, N: int, K: int, input_precision: str, dtype: torch.dtype, num_sms: int) -> tuple:
    return (_utils.bucket(M), N, K, input_precision, _dtypes.dtype_name(dtype), num_sms)


def splitk_plan(K: int, block_k: int, split_k: int) -> tuple[int, int]:
    """(K_PER_SPLIT, splits): ranges of whole BLOCK_K blocks, no empty split (fewer splits if K is short)."""
    k_blocks = triton.cdiv(K, block_k)
    split_k = max(1, min(split_k, k_blocks))
    k_per_split = triton.cdiv(k_blocks, split_k) * block_k
    return k_per_split, triton.cdiv(K, k_per_split)


# --------------------------------------------------------------------------------------------------
# Launcher
# --------------------------------------------------------------------------------------------------


def linear_splitk(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    activation: Optional[str] = None,
    residual: Optional[torch.Tensor] = None,
    *,
    out: Optional[torch.Tensor] = None,
    split_k: Optional[int] = None,
    config: Optional[dict] = None,
    input_precision: Optional[str] = None,
) -> torch.Tensor:
    """out [M, N] = activation(x [M, K] @ weight [N, K]^T + bias [N]) + residual [M, N], split over K.

    Same operands and rules as kernels.linear (any M works; it pays for M <= 256). split_k: the number
    of K ranges (clamped to the number of BLOCK_K blocks); config: {"BLOCK_M", "BLOCK_N", "BLOCK_K",
    "SPLIT_K", "num_warps", "num_stages"}; neither -> the launch state's config for the shape.
    """
    out, input_precision = check_linear_args(
        x, weight, bias, activation, residual, out, input_precision, _linear_splitk_partial_kernel
    )
    if split_k is not None and (isinstance(split_k, bool) or not isinstance(split_k, int) or split_k < 1):
        raise ValueError(f"split_k must be a positive int or None, got {split_k!r}")
    if x.shape[0] == 0:
        return out
    launch_linear_splitk(
        x, weight, bias, _act.kernel_name(activation), residual, out, input_precision, split_k=split_k, config=config
    )
    return out


def launch_linear_splitk(
    x,
    weight,
    bias,
    kernel_activation: str,
    residual,
    out,
    input_precision: str,
    *,
    split_k: Optional[int] = None,
    config: Optional[dict] = None,
) -> None:
    """The two launches alone, for callers that checked the inputs already (check_linear_args); M >= 1."""
    M, K = x.shape
    N = weight.shape[0]
    if config is None:
        state = launch_state(x.device)
        key = config_key(M, N, K, input_precision, x.dtype, state.num_sms)
        config = state.config(KERNEL, key, _splitk_heuristic)
    meta, launch = split_launch(config)
    missing = {"BLOCK_M", "BLOCK_N", "BLOCK_K"} - set(meta)
    if missing:
        raise ValueError(f"config is missing {sorted(missing)}")
    wanted = split_k if split_k is not None else meta.pop("SPLIT_K", 1)
    meta.pop("SPLIT_K", None)
    k_per_split, splits = splitk_plan(K, meta["BLOCK_K"], wanted)

    workspace = torch.empty((splits, M, N), dtype=torch.float32, device=x.device)  # every element written
    tiles = triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"])
    _linear_splitk_partial_kernel[(tiles, splits)](
        x,
        weight,
        workspace,
        M,
        N,
        K,
        k_per_split,
        x.stride(0),
        x.stride(1),
        weight.stride(0),
        weight.stride(1),
        INPUT_PRECISION=input_precision,
        EVEN_K=K % meta["BLOCK_K"] == 0,
        **meta,
        **launch,
    )

    if bias is not None and bias.stride(0) != 1:
        bias = bias.contiguous()  # the reduce reads bias with unit stride
    res = residual if residual is not None else out  # dummy pointer when unused
    block = 256 if _utils.is_interpreted(_splitk_reduce_kernel) else REDUCE_BLOCK
    _splitk_reduce_kernel[(triton.cdiv(M * N, block),)](
        workspace,
        bias if bias is not None else out,
        res,
        out,
        M,
        N,
        splits,
        res.stride(0),
        res.stride(1),
        out.stride(0),
        HAS_BIAS=bias is not None,
        HAS_RESIDUAL=residual is not None,
        ACTIVATION=kernel_activation,
        BLOCK=block,
        num_warps=4,
    )
