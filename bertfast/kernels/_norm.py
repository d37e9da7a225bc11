"""The LayerNorm math of every row-wise kernel, written once as a `@triton.jit` helper.

`embed_layernorm` (gather + sum) and `layernorm` / `bias_residual_layernorm` (y + bias + residual)
differ only in how they build the fp32 rows; what follows is this helper:

    x [BLOCK_T, BLOCK_H] fp32 -> mean, centred variance, rstd (fp32) -> (x - mean) * rstd * w + b

Statistics are two-pass over registers: the mean, then the variance of the centred values, which is
never negative and loses nothing to cancellation. The reference for the math is each kernel's
`*_ref` function (plain PyTorch) beside its launcher.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def layernorm_tile(x, cols, col_ok, H, eps, w_ptr, b_ptr):
    """LayerNorm over the last dim of an fp32 tile of whole rows.

    x: [BLOCK_T, BLOCK_H] fp32; columns at or past H (col_ok False) may hold anything, rows past the
    end of the input may too (their result is finite garbage the caller does not store).
    cols: [BLOCK_H] column indices; w_ptr / b_ptr: the [H] scale and shift (any float dtype).
    Returns the normalized [BLOCK_T, BLOCK_H] tile in fp32; the masked columns come out 0.
    """
    x = tl.where(col_ok[None, :], x, 0.0)
    mean = tl.sum(x, axis=1) / H  # [BLOCK_T]
    xc = tl.where(col_ok[None, :], x - mean[:, None], 0.0)  # [BLOCK_T, BLOCK_H]
    var = tl.sum(xc * xc, axis=1) / H  # [BLOCK_T]
    rstd = 1.0 / tl.sqrt(var + eps)
    w = tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)  # [BLOCK_H]
    b = tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    return xc * rstd[:, None] * w[None, :] + b[None, :]
