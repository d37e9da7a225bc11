"""LayerNorm(y + bias + residual) over the last dim of a [T, H] input, in one pass over the rows.

    y [T, H] (+ bias [H]) (+ residual [T, H]) -> LayerNorm(weight, ln_bias) -> out [T, H]

Two public entry points check their inputs and call the one launcher, `launch_layernorm` (what the
model and the GEMM dispatcher call on operands checked at their boundary):

- `layernorm(x, weight, bias, eps, residual)`: LayerNorm(x + residual), the model's plain LN.
- `bias_residual_layernorm(y, bias, residual, weight, ln_bias, eps)`: the epilogue after a cuBLAS
  GEMM without bias (`torch.mm`) in BERT's attention-output and FFN2 blocks. One row pass reads y,
  the bias and the residual, and writes the normalized rows once, where "GEMM with a residual
  epilogue, then a LayerNorm kernel" writes and re-reads a [T, H] intermediate.

Each program normalizes BLOCK_T whole rows held in registers as a [BLOCK_T, BLOCK_H] tile:
BLOCK_H = next_power_of_2(H) with a column mask, so any H up to 16K works (48, 96, 384, 768...).
The sum is formed in fp32 and the statistics are fp32 (`_norm.layernorm_tile`, shared with
embed_layernorm); the output is stored once, in y's dtype. Bytes per row: 2 reads + 1 write of H
elements (plus the [H] vectors, cached), so at H = 768 fp16 the pass is bound by memory bandwidth.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .. import _dtypes
from . import _utils
from ._norm import layernorm_tile
from .state import launch_state

KERNEL = "layernorm"


@triton.jit(do_not_specialize=["T"])
def _layernorm_fwd_kernel(
    x_ptr,
    bias_ptr,
    res_ptr,
    ln_w_ptr,
    ln_b_ptr,
    out_ptr,
    T,
    H,
    stride_xt,
    stride_xh,
    stride_rt,
    stride_rh,
    stride_ot,
    eps,
    HAS_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)  # [BLOCK_T]
    cols = tl.arange(0, BLOCK_H)  # [BLOCK_H]
    row_ok = rows < T
    col_ok = cols < H
    mask = row_ok[:, None] & col_ok[None, :]  # [BLOCK_T, BLOCK_H]
    rows = rows.to(tl.int64)

    x = tl.load(x_ptr + rows[:, None] * stride_xt + cols[None, :] * stride_xh, mask=mask, other=0.0)
    x = x.to(tl.float32)  # [BLOCK_T, BLOCK_H]
    if HAS_BIAS:
        x += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    if HAS_RESIDUAL:
        r = tl.load(res_ptr + rows[:, None] * stride_rt + cols[None, :] * stride_rh, mask=mask, other=0.0)
        x += r.to(tl.float32)

    y = layernorm_tile(x, cols, col_ok, H, eps, ln_w_ptr, ln_b_ptr)  # [BLOCK_T, BLOCK_H] fp32
    tl.store(out_ptr + rows[:, None] * stride_ot + cols[None, :], y.to(out_ptr.dtype.element_ty), mask=mask)


def config_key(H: int, dtype: torch.dtype) -> tuple:
    return (H, _dtypes.dtype_name(dtype))


def launch_layernorm(x, bias, residual, weight, ln_bias, eps, out, *, config: Optional[dict] = None):
    """Launch the row kernel on checked inputs: x / residual [T, H] any strides, vectors [H], out [T, H];
    T >= 1. `config` ({"BLOCK_T", "num_warps"}) overrides the launch state's config for the shape."""
    T, H = x.shape
    if config is None:
        config = launch_state(x.device).config(KERNEL, config_key(H, x.dtype), _utils.row_config)
    block_h, block_t, num_warps = triton.next_power_of_2(H), config["BLOCK_T"], config["num_warps"]
    weight, ln_bias = weight.contiguous(), ln_bias.contiguous()
    bias = bias.contiguous() if bias is not None else None
    res = residual if residual is not None else x  # a valid pointer; never read without HAS_RESIDUAL
    _layernorm_fwd_kernel[(triton.cdiv(T, block_t),)](
        x,
        bias if bias is not None else weight,
        res,
        weight,
        ln_bias,
        out,
        T,
        H,
        x.stride(0),
        x.stride(1),
        res.stride(0),
        res.stride(1),
        out.stride(0),
        eps,
        HAS_BIAS=bias is not None,
        HAS_RESIDUAL=residual is not None,
        BLOCK_T=block_t,
        BLOCK_H=block_h,
        num_warps=num_warps,
    )
    return out


def _check_rows(
    x_name: str,
    x,
    vectors: dict,
    residual,
    eps,
    out,
) -> tuple[torch.Tensor, float]:
    """Boundary checks shared by both entry points; returns (out buffer, eps)."""
    _utils.check_tensor(x_name, x, ndim=2)
    T, H = x.shape
    for name, v in vectors.items():
        if v is not None:
            _utils.check_tensor(name, v, ndim=1)
            _utils.check_shape(name, v, (H,))
    if residual is not None:
        _utils.check_tensor("residual", residual, ndim=2)
        _utils.check_shape("residual", residual, (T, H))
    _utils.check_same_dtype(x_name, x, **vectors, residual=residual)
    eps = _utils.check_eps(eps)
    device = _utils.check_devices(_layernorm_fwd_kernel, **{x_name: x}, **vectors, residual=residual)
    if H == 0:
        raise ValueError(f"{x_name} must have a non-empty last dim (H >= 1)")
    out = _utils.check_out(out, (T, H), x.dtype, device, **{x_name: x}, residual=residual, **vectors)
    return out, eps


def layernorm(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
    residual: Optional[torch.Tensor] = None,
    *,
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """LayerNorm(x + residual) over the last dim of a 2-D [T, H] input; fp32 statistics, x's dtype out.

    x and residual may be strided (any row and column strides); weight and bias are [H].
    `out` ([T, H], x's dtype, unit column stride) is written in place when given.
    """
    out, eps = _check_rows("x", x, {"weight": weight, "bias": bias}, residual, eps, out)
    if x.shape[0] == 0:
        return out
    return launch_layernorm(x, None, residual, weight, bias, eps, out)


def bias_residual_layernorm(
    y: torch.Tensor,
    bias: Optional[torch.Tensor],
    residual: Optional[torch.Tensor],
    weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
    *,
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """LayerNorm(y + bias + residual) in fp32, stored once in y's dtype -> [T, H].

    y: [T, H], typically a bias-free GEMM output (any row and column strides); bias: [H] or None;
    residual: [T, H] (any strides) or None; weight, ln_bias: the LayerNorm's [H] scale and shift; all
    in y's dtype. `out` ([T, H], y's dtype, unit column stride, not overlapping an input) is written
    in place when given.
    """
    out, eps = _check_rows("y", y, {"bias": bias, "weight": weight, "ln_bias": ln_bias}, residual, eps, out)
    if y.shape[0] == 0:
        return out
    return launch_layernorm(y, bias, residual, weight, ln_bias, eps, out)


def layernorm_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
    residual: Optional[torch.Tensor] = None,
    *,
    compute_dtype: torch.dtype = torch.float32,
    out_dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """Readable reference: upcast to compute_dtype, add the residual, normalize, cast to out_dtype (x's by default)."""
    return bias_residual_layernorm_ref(
        x, None, residual, weight, bias, eps, compute_dtype=compute_dtype, out_dtype=out_dtype
    )


def bias_residual_layernorm_ref(
    y: torch.Tensor,
    bias: Optional[torch.Tensor],
    residual: Optional[torch.Tensor],
    weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
    *,
    compute_dtype: torch.dtype = torch.float32,
    out_dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """Readable reference: y + bias + residual in compute_dtype, LayerNorm, cast to out_dtype (y's by default)."""
    h = y.to(compute_dtype)  # [T, H]
    if bias is not None:
        h = h + bias.to(compute_dtype)
    if residual is not None:
        h = h + residual.to(compute_dtype)
    mean = h.mean(dim=-1, keepdim=True)  # [T, 1]
    var = (h - mean).pow(2).mean(dim=-1, keepdim=True)  # [T, 1]
    out = (h - mean) * torch.rsqrt(var + eps) * weight.to(compute_dtype) + ln_bias.to(compute_dtype)
    return out.to(out_dtype or y.dtype)
