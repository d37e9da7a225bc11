"""A Hopper linear: tensor-descriptor (TMA) loads, a persistent tile loop, the same fused epilogue.

    x [M, K] @ weight [N, K]^T (fp16 / bf16) -> fp32 accumulator [BLOCK_M, BLOCK_N]
        -> + bias [N] -> activation -> + residual [M, N] -> out [M, N] (x's dtype)

- Operand tiles come through tensor descriptors (`tl.make_tensor_descriptor`): on sm_90 the bulk
  tensor copy engine fetches each [BLOCK_M, BLOCK_K] / [BLOCK_N, BLOCK_K] box into shared memory,
  zero-filling what lies past M, N or K, so the K loop carries no masks and no index arithmetic.
- Persistent: the grid is min(number of SMs, number of tiles); program p walks tiles p, p + grid, ...
  in grouped order (GROUP_M row-tiles share a column sweep, for L2 reuse of the weight).
- The epilogue (bias, activation from epilogue.py, residual, one masked store) is gemm.py's.

Descriptors need, on the GPU: unit stride along K, 16-byte aligned base pointers and row strides
(`layout_reasons` says which operand breaks that), and global scratch for the descriptors that
the kernel builds on the device, which Triton asks of the allocator given to `triton.set_allocator`
(installed here on first use, a torch allocation, unless the caller set one). fp16 / bf16 only:
fp32 operands are not offered (IEEE fp32 dots would not use the tensor cores this kernel is for).
The Triton 3.6 interpreter runs tensor descriptors, so the CPU tests check values.
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
from .epilogue import _epilogue_store_tile
from .gemm import _grouped_tile, check_linear_args, fit_smem
from .state import launch_state

KERNEL = "linear_tma"


@triton.jit(do_not_specialize=["M"])
def _linear_tma_kernel(
    x_ptr,
    w_ptr,
    bias_ptr,
    res_ptr,
    out_ptr,
    M,
    N,
    K,
    stride_xm,
    stride_wn,
    stride_rm,
    stride_rn,
    stride_om,
    NUM_PROGRAMS,
    HAS_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    ACTIVATION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    x_desc = tl.make_tensor_descriptor(x_ptr, shape=[M, K], strides=[stride_xm, 1], block_shape=[BLOCK_M, BLOCK_K])
    w_desc = tl.make_tensor_descriptor(w_ptr, shape=[N, K], strides=[stride_wn, 1], block_shape=[BLOCK_N, BLOCK_K])
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)

    for tile in range(tl.program_id(0), tiles_m * tiles_n, NUM_PROGRAMS):
        pid_m, pid_n = _grouped_tile(tile, tiles_m, tiles_n, GROUP_M)
        off_m = pid_m * BLOCK_M
        off_n = pid_n * BLOCK_N

        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for kk in range(0, k_tiles):
            a = x_desc.load([off_m, kk * BLOCK_K])  # [BLOCK_M, BLOCK_K], zero past M / K
            b = w_desc.load([off_n, kk * BLOCK_K])  # [BLOCK_N, BLOCK_K], zero past N / K
            acc = tl.dot(a, b.T, acc)

        # Epilogue in fp32: bias, activation, residual, one store in the output dtype.
        offs_m = off_m + tl.arange(0, BLOCK_M)  # [BLOCK_M]
        offs_n = off_n + tl.arange(0, BLOCK_N)  # [BLOCK_N]
        _epilogue_store_tile(
            acc,
            offs_m,
            offs_n,
            M,
            N,
            bias_ptr,
            res_ptr,
            out_ptr,
            stride_rm,
            stride_rn,
            stride_om,
            HAS_BIAS,
            HAS_RESIDUAL,
            ACTIVATION,
        )


# --------------------------------------------------------------------------------------------------
# Configs. Key: (M bucket, N, K, dtype name, SM count). A config: BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M,
# num_warps, num_stages.
# --------------------------------------------------------------------------------------------------


def config_key(M: int, N: int, K: int, dtype: torch.dtype, num_sms: int) -> tuple:
    return (_utils.bucket(M), N, K, _dtypes.dtype_name(dtype), num_sms)


TMA_INTERPRETER_CONFIG = {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 2, "num_warps": 4, "num_stages": 1}


def _tma_heuristic(key: tuple) -> Config:
    """64-row tiles up to M = 256 (one warpgroup), 128 x 128 beyond, 128 x 256 when that still gives
    two tiles per SM; BLOCK_K 64 (128 B of fp16 per row: full TMA boxes); stages to fit SMEM_LIMIT."""
    m_bucket, n, _k, _dtype, sms = key
    if _utils.is_interpreted(_linear_tma_kernel):
        return dict(TMA_INTERPRETER_CONFIG)
    if m_bucket <= 256:
        bm, bn, warps, stages = 64, 128, 4, 4
    elif triton.cdiv(m_bucket, 128) * triton.cdiv(n, 256) >= 2 * sms:
        bm, bn, warps, stages = 128, 256, 8, 3
    else:
        bm, bn, warps, stages = 128, 128, 8, 4
    bn = min(bn, max(64, triton.next_power_of_2(n)))
    config = {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": warps, "num_stages": stages}
    return fit_smem(config, 2)


TMA_DTYPES = (torch.float16, torch.bfloat16)


def layout_reasons(x: torch.Tensor, weight: torch.Tensor) -> list[str]:
    """Why tensor descriptors cannot read these operands (empty when they can): unit stride along K,
    16-byte aligned base pointers and row strides."""
    reasons = []
    for name, t in (("x", x), ("weight", weight)):
        if t.shape[1] > 1 and t.stride(1) != 1:
            reasons.append(f"{name} must have unit stride along K for tensor descriptors, got strides {t.stride()}")
        if t.data_ptr() % 16:
            reasons.append(f"{name}'s data pointer must be 16-byte aligned for tensor descriptors")
        if (t.stride(0) * t.element_size()) % 16:
            reasons.append(
                f"{name}'s row stride ({t.stride(0)} elements) must be a multiple of 16 bytes for tensor descriptors"
            )
    return reasons


def _torch_allocator(size: int, alignment: int, stream: Optional[int]) -> torch.Tensor:
    # Scratch for descriptors built on the device (128 B per program); torch's allocator aligns to 512 B.
    return torch.empty(size, dtype=torch.int8, device=torch.device("cuda", torch.cuda.current_device()))


def _ensure_allocator() -> None:
    """Install the torch allocator for Triton's on-device scratch, unless this context has one already.
    (Triton keeps it in a ContextVar: a new thread starts without one, so this runs per launch.)"""
    try:
        from triton.runtime._allocation import NullAllocator, _allocator
    except ImportError:  # pragma: no cover - another triton layout: install ours unconditionally
        triton.set_allocator(_torch_allocator)
        return
    if isinstance(_allocator.get(), NullAllocator):
        triton.set_allocator(_torch_allocator)


# --------------------------------------------------------------------------------------------------
# Launcher
# --------------------------------------------------------------------------------------------------


def linear_tma(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    activation: Optional[str] = None,
    residual: Optional[torch.Tensor] = None,
    *,
    out: Optional[torch.Tensor] = None,
    config: Optional[dict] = None,
) -> torch.Tensor:
    """out [M, N] = activation(x [M, K] @ weight [N, K]^T + bias [N]) + residual [M, N] on Hopper.

    fp16 / bf16 operands; x and weight with unit stride along K and 16-byte aligned rows (see
    layout_reasons); residual any strides; out (x's dtype, unit column stride) written when given.
    config: {"BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M", "num_warps", "num_stages"}, else the launch state's.
    """
    out, _ = check_linear_args(x, weight, bias, activation, residual, out, None, _linear_tma_kernel)
    if x.dtype not in TMA_DTYPES:
        raise TypeError(f"x has dtype {x.dtype}: linear_tma takes float16 / bfloat16 only (fp32 is not offered)")
    reasons = layout_reasons(x, weight)
    if reasons:
        raise ValueError("; ".join(reasons))
    if x.shape[0] == 0:
        return out
    launch_linear_tma(x, weight, bias, _act.kernel_name(activation), residual, out, config=config)
    return out


def launch_linear_tma(x, weight, bias, kernel_activation: str, residual, out, *, config: Optional[dict] = None) -> None:
    """The launch alone, for callers that checked the inputs (check_linear_args, layout_reasons); M >= 1."""
    M, K = x.shape
    N = weight.shape[0]
    state = launch_state(x.device)
    sms = state.num_sms
    if config is None:
        config = state.config(KERNEL, config_key(M, N, K, x.dtype, sms), _tma_heuristic)
    meta, launch = split_launch(config)
    missing = {"BLOCK_M", "BLOCK_N", "BLOCK_K"} - set(meta)
    if missing:
        raise ValueError(f"config is missing {sorted(missing)}")
    meta.setdefault("GROUP_M", 8)
    if x.device.type == "cuda":
        _ensure_allocator()
    if bias is not None and bias.stride(0) != 1:
        bias = bias.contiguous()  # the epilogue reads bias with unit stride
    res = residual if residual is not None else out  # dummy pointer when unused
    tiles = triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"])
    programs = min(sms, tiles)
    _linear_tma_kernel[(programs,)](
        x,
        weight,
        bias if bias is not None else out,
        res,
        out,
        M,
        N,
        K,
        x.stride(0),
        weight.stride(0),
        res.stride(0),
        res.stride(1),
        out.stride(0),
        programs,
        HAS_BIAS=bias is not None,
        HAS_RESIDUAL=residual is not None,
        ACTIVATION=kernel_activation,
        **meta,
        **launch,
    )
