"""GEMM epilogues: the activation math every GEMM kernel fuses, and a bias + activation pass after cuBLAS.

    y [T, N] (a cuBLAS product, any float dtype) -> fp32 -> + bias [N] -> activation -> + residual [T, N]
        -> out [T, N] (y's dtype), one read and one write per element

`_apply_activation` is the one @triton.jit activation helper: gemm.py, gemm_splitk.py and gemm_tma.py
call it in their fused epilogues, `bias_activation` runs it as its own row-wise pass. The activation
names come from `bertfast.activations` (a torch-only leaf module: the one import outside torch and
triton that kernels/ allows).

In place is allowed (`out=y`): each element is read and then written by the same program, and no
program reads another's elements.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .. import _dtypes
from .. import activations as _act
from . import _utils
from .state import launch_state

KERNEL = "bias_activation"


@triton.jit
def _sigmoid(x):
    # 1 / (1 + e^-x): exp2 overflows to inf for very negative x, giving exactly 0 (never NaN).
    return 1.0 / (1.0 + tl.math.exp2(-1.4426950408889634 * x))


@triton.jit
def _apply_activation(x, ACTIVATION: tl.constexpr):
    """Activation on an fp32 tile; ACTIVATION is a kernel name from bertfast.activations ("" for none)."""
    if ACTIVATION == "gelu":
        # exact: x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2)))
        x = 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))
    elif ACTIVATION == "gelu_tanh":
        # 0.5 x (1 + tanh(u)) == x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3)
        u = 0.7978845608028654 * (x + 0.044715 * x * x * x)
        x = x * _sigmoid(2.0 * u)
    elif ACTIVATION == "quick_gelu":
        x = x * _sigmoid(1.702 * x)
    elif ACTIVATION == "relu":
        x = tl.maximum(x, 0.0)
    elif ACTIVATION == "silu":
        x = x * _sigmoid(x)
    elif ACTIVATION == "tanh":
        # tanh(x) = 2 sigmoid(2x) - 1; saturates cleanly to +-1
        x = 2.0 * _sigmoid(2.0 * x) - 1.0
    return x


@triton.jit
def _epilogue_store_tile(
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
    HAS_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    ACTIVATION: tl.constexpr,
):
    """The GEMMs' fused epilogue on an fp32 [BLOCK_M, BLOCK_N] accumulator tile: + bias [N] ->
    activation -> + residual [M, N], then one masked store in the output's dtype."""
    n_ok = offs_n < N
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)
        acc += bias[None, :]
    acc = _apply_activation(acc, ACTIVATION)
    rows = offs_m.to(tl.int64)
    mask = (offs_m < M)[:, None] & n_ok[None, :]
    if HAS_RESIDUAL:
        res = tl.load(res_ptr + rows[:, None] * stride_rm + offs_n[None, :] * stride_rn, mask=mask, other=0.0)
        acc += res.to(tl.float32)
    tl.store(out_ptr + rows[:, None] * stride_om + offs_n[None, :], acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["T"])
def _bias_activation_kernel(
    y_ptr,
    bias_ptr,
    res_ptr,
    out_ptr,
    T,
    N,
    stride_yt,
    stride_yn,
    stride_rt,
    stride_rn,
    stride_ot,
    HAS_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    ACTIVATION: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    # Program (i, j) owns rows [i BLOCK_T, +BLOCK_T) x columns [j BLOCK_N, +BLOCK_N): a whole row
    # when N <= BLOCK_N (BERT's 768 / 3072), column blocks beyond.
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)  # [BLOCK_T]
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
    col_ok = cols < N
    mask = (rows < T)[:, None] & col_ok[None, :]
    rows = rows.to(tl.int64)

    y = tl.load(y_ptr + rows[:, None] * stride_yt + cols[None, :] * stride_yn, mask=mask, other=0.0)
    y = y.to(tl.float32)  # [BLOCK_T, BLOCK_N]
    if HAS_BIAS:
        b = tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        y += b[None, :]
    y = _apply_activation(y, ACTIVATION)
    if HAS_RESIDUAL:
        r = tl.load(res_ptr + rows[:, None] * stride_rt + cols[None, :] * stride_rn, mask=mask, other=0.0)
        y += r.to(tl.float32)
    tl.store(out_ptr + rows[:, None] * stride_ot + cols[None, :], y.to(out_ptr.dtype.element_ty), mask=mask)


def _same_view(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()


def _launch_params(N: int):
    """(BLOCK_T, BLOCK_N, num_warps): ~4K elements per program, whole rows up to N = 4096."""
    block_n = min(triton.next_power_of_2(N), 4096)
    block_t = max(1, min(16, 4096 // block_n))
    if _utils.interpreting():
        block_t = min(block_t, 4)  # fewer, smaller programs: the interpreter's cost is per element
    num_warps = 8 if block_t * block_n >= 4096 else 4
    return block_t, block_n, num_warps


def bias_activation(
    y: torch.Tensor,
    bias: Optional[torch.Tensor],
    activation: Optional[str],
    out: Optional[torch.Tensor] = None,
    *,
    residual: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """out [T, N] = activation(y [T, N] + bias [N]) + residual [T, N], computed in fp32, stored in y's dtype.

    bias, activation and residual are each optional. y and residual may be strided; `out` (y's dtype,
    unit column stride) may be y itself (in place) but must not overlap bias or residual.
    """
    _utils.check_tensor("y", y, ndim=2)
    T, N = y.shape
    if bias is not None:
        _utils.check_tensor("bias", bias, ndim=1)
        _utils.check_shape("bias", bias, (N,))
    if residual is not None:
        _utils.check_tensor("residual", residual, ndim=2)
        _utils.check_shape("residual", residual, (T, N))
    _utils.check_same_dtype("y", y, bias=bias, residual=residual)
    _act.check_name(activation)
    device = _utils.check_devices(_bias_activation_kernel, y=y, bias=bias, residual=residual)
    in_place = out is not None and _same_view(out, y)
    y_guard = {} if in_place else {"y": y}
    out = _utils.check_out(out, (T, N), y.dtype, device, bias=bias, residual=residual, **y_guard)
    if T == 0 or N == 0:
        return out
    launch_bias_activation(y, bias, _act.kernel_name(activation), residual, out)
    return out


def config_key(N: int, dtype: torch.dtype) -> tuple:
    return (N, _dtypes.dtype_name(dtype))


def _bias_activation_heuristic(key: tuple) -> dict:
    block_t, block_n, num_warps = _launch_params(key[0])
    return {"BLOCK_T": block_t, "BLOCK_N": block_n, "num_warps": num_warps}


def launch_bias_activation(y, bias, kernel_activation: str, residual, out, *, config: Optional[dict] = None) -> None:
    """The launch alone (inputs already checked; T, N >= 1): kernel_activation is the kernels'
    constexpr name; `config` ({"BLOCK_T", "BLOCK_N", "num_warps"}) overrides the launch state's."""
    T, N = y.shape
    if config is None:
        config = launch_state(y.device).config(KERNEL, config_key(N, y.dtype), _bias_activation_heuristic)
    block_t, block_n, num_warps = config["BLOCK_T"], config["BLOCK_N"], config["num_warps"]
    if bias is not None and bias.stride(0) != 1:
        bias = bias.contiguous()  # the kernel reads bias with unit stride
    res = residual if residual is not None else y  # dummy pointer when unused
    grid = (triton.cdiv(T, block_t), triton.cdiv(N, block_n))
    _bias_activation_kernel[grid](
        y,
        bias if bias is not None else y,
        res,
        out,
        T,
        N,
        y.stride(0),
        y.stride(1),
        res.stride(0),
        res.stride(1),
        out.stride(0),
        HAS_BIAS=bias is not None,
        HAS_RESIDUAL=residual is not None,
        ACTIVATION=kernel_activation,
        BLOCK_T=block_t,
        BLOCK_N=block_n,
        num_warps=num_warps,
    )


def bias_activation_ref(
    y: torch.Tensor,
    bias: Optional[torch.Tensor],
    activation: Optional[str],
    *,
    residual: Optional[torch.Tensor] = None,
    compute_dtype: torch.dtype = torch.float32,
    out_dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """Readable reference: upcast, + bias, activation (HF's torch function), + residual, cast."""
    z = y.to(compute_dtype)
    if bias is not None:
        z = z + bias.to(compute_dtype)
    z = _act.apply(z, activation)
    if residual is not None:
        z = z + residual.to(compute_dtype)
    return z.to(out_dtype or y.dtype)
