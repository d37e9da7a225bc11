"""LayerNorm(x + residual) over the last dim of a [T, H] input, in one pass.

Each program normalizes BLOCK_T whole rows held in registers as a [BLOCK_T, BLOCK_H] tile:
BLOCK_H = next_power_of_2(H) with a column mask, so any H up to 16K works (48, 96, 384, 768...).
Statistics are fp32 (two-pass over registers: mean, then the centred variance, which is exact
enough and never negative); the output is stored in x's dtype.

    x [T, H] (+ residual [T, H]) -> LayerNorm -> out [T, H]
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from . import _utils


@triton.jit(do_not_specialize=["T"])
def _layernorm_fwd_kernel(
    x_ptr, res_ptr, w_ptr, b_ptr, out_ptr,
    T, H,
    stride_xt, stride_xh,
    stride_rt, stride_rh,
    stride_ot,
    eps,
    HAS_RESIDUAL: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)  # [BLOCK_T]
    cols = tl.arange(0, BLOCK_H)  # [BLOCK_H]
    row_ok = rows < T
    col_ok = cols < H
    mask = row_ok[:, None] & col_ok[None, :]
    rows = rows.to(tl.int64)

    x = tl.load(x_ptr + rows[:, None] * stride_xt + cols[None, :] * stride_xh, mask=mask, other=0.0)
    x = x.to(tl.float32)
    if HAS_RESIDUAL:
        r = tl.load(res_ptr + rows[:, None] * stride_rt + cols[None, :] * stride_rh, mask=mask, other=0.0)
        x += r.to(tl.float32)

    mean = tl.sum(x, axis=1) / H  # [BLOCK_T]
    xc = tl.where(mask, x - mean[:, None], 0.0)
    var = tl.sum(xc * xc, axis=1) / H
    rstd = 1.0 / tl.sqrt(var + eps)

    w = tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    y = xc * rstd[:, None] * w[None, :] + b[None, :]
    tl.store(out_ptr + rows[:, None] * stride_ot + cols[None, :], y.to(out_ptr.dtype.element_ty), mask=mask)


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
    _utils.check_tensor("x", x, ndim=2)
    T, H = x.shape
    _utils.check_tensor("weight", weight, ndim=1)
    _utils.check_tensor("bias", bias, ndim=1)
    _utils.check_shape("weight", weight, (H,))
    _utils.check_shape("bias", bias, (H,))
    if residual is not None:
        _utils.check_tensor("residual", residual, ndim=2)
        _utils.check_shape("residual", residual, (T, H))
    _utils.check_same_dtype("x", x, weight=weight, bias=bias, residual=residual)
    eps = _utils.check_eps(eps)
    device = _utils.check_devices(_layernorm_fwd_kernel, x=x, weight=weight, bias=bias, residual=residual)
    if H == 0:
        raise ValueError("x must have a non-empty last dim (H >= 1)")
    out = _utils.check_out(out, (T, H), x.dtype, device, x=x, residual=residual, weight=weight, bias=bias)
    if T == 0:
        return out

    block_h, block_t, num_warps = _utils.layernorm_launch_params(H, x.element_size())
    weight, bias = weight.contiguous(), bias.contiguous()
    res = residual if residual is not None else x
    grid = (triton.cdiv(T, block_t),)
    _layernorm_fwd_kernel[grid](
        x, res, weight, bias, out,
        T, H,
        x.stride(0), x.stride(1),
        res.stride(0), res.stride(1),
        out.stride(0),
        eps,
        HAS_RESIDUAL=residual is not None,
        BLOCK_T=block_t,
        BLOCK_H=block_h,
        num_warps=num_warps,
    )
    return out


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
    h = x.to(compute_dtype)
    if residual is not None:
        h = h + residual.to(compute_dtype)
    mean = h.mean(dim=-1, keepdim=True)
    var = (h - mean).pow(2).mean(dim=-1, keepdim=True)
    y = (h - mean) * torch.rsqrt(var + eps) * weight.to(compute_dtype) + bias.to(compute_dtype)
    return y.to(out_dtype or x.dtype)
