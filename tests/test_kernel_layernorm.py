"""layernorm and bias_residual_layernorm: LayerNorm(y + bias + residual) over the last dim, fp32 statistics,
against fp64 and torch's own error."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bertfast.kernels import bias_residual_layernorm, bias_residual_layernorm_ref, layernorm, layernorm_ref

from .helpers import (
    DEVICE,
    KERNEL_DTYPES,
    assert_close,
    assert_within_torch_error,
    seed_from_test_id,  # noqa: F401  (autouse: a fresh seed per test, from its id)
)

DTYPES = KERNEL_DTYPES


def _params(H, dtype):
    weight = (1.0 + 0.5 * torch.randn(H, device=DEVICE)).to(dtype)
    bias = (0.5 * torch.randn(H, device=DEVICE)).to(dtype)
    return weight, bias


def _check(x, weight, bias, eps, residual, out, dtype, what):
    ref = layernorm_ref(x, weight, bias, eps, residual, compute_dtype=torch.float64, out_dtype=torch.float64)
    h = x if residual is None else x + residual  # torch's own unfused op, in dtype
    same = F.layer_norm(h, (x.shape[-1],), weight, bias, eps)
    assert_within_torch_error(out, ref, same, dtype, what)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T", [1, 33, 127, 257])
@pytest.mark.parametrize("H", [48, 96])
@pytest.mark.parametrize("with_residual", [False, True])
def test_layernorm_matches_reference(dtype, T, H, with_residual):
    x = (2.0 * torch.randn(T, H, device=DEVICE) + 0.3).to(dtype)
    residual = torch.randn(T, H, device=DEVICE).to(dtype) if with_residual else None
    weight, bias = _params(H, dtype)
    out = torch.full((T, H), float("nan"), dtype=dtype, device=DEVICE)
    got = layernorm(x, weight, bias, 1e-12, residual, out=out)
    assert got is out
    _check(x, weight, bias, 1e-12, residual, out, dtype, f"layernorm T={T} H={H}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_layernorm_bert_hidden_size(dtype):
    T, H = 9, 768  # BLOCK_H = 1024 > H, several rows per program
    x = torch.randn(T, H, device=DEVICE).to(dtype)
    residual = torch.randn(T, H, device=DEVICE).to(dtype)
    weight, bias = _params(H, dtype)
    got = layernorm(x, weight, bias, 1e-5, residual)
    assert got.dtype == dtype and got.shape == (T, H)
    _check(x, weight, bias, 1e-5, residual, got, dtype, "layernorm H=768")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_layernorm_strided_inputs_and_output(dtype):
    T, H = 33, 96
    wide = torch.randn(T, 3 * H, device=DEVICE).to(dtype)
    x = wide[:, H + 5 : 2 * H + 5]  # row stride 3H, offset start
    residual = torch.randn(H, T, device=DEVICE).to(dtype).t()  # column stride T
    assert not x.is_contiguous() and residual.stride(1) != 1
    weight, bias = _params(H, dtype)
    buf = torch.full((T, 2 * H), float("nan"), dtype=dtype, device=DEVICE)
    out = buf[:, :H]  # output rows strided too
    layernorm(x, weight, bias, 1e-12, residual, out=out)
    _check(x, weight, bias, 1e-12, residual, out, dtype, "layernorm strided")
    assert torch.isnan(buf[:, H:]).all(), "wrote outside the output view"


def test_layernorm_ref_is_textbook():
    x = torch.randn(5, 48, dtype=torch.float64)
    weight, bias = torch.randn(48, dtype=torch.float64), torch.randn(48, dtype=torch.float64)
    ref = layernorm_ref(x, weight, bias, 1e-6, compute_dtype=torch.float64)
    assert_close(ref, F.layer_norm(x, (48,), weight, bias, 1e-6), 1e-12, "layernorm_ref")


def test_layernorm_empty_rows():
    w, b = _params(48, torch.float32)
    out = layernorm(torch.randn(0, 48, device=DEVICE), w, b, 1e-5)
    assert out.shape == (0, 48)


def test_layernorm_bad_inputs():
    x = torch.randn(4, 48, device=DEVICE)
    w, b = _params(48, torch.float32)
    with pytest.raises(ValueError, match="x must be 2-D"):
        layernorm(x[0], w, b, 1e-5)
    with pytest.raises(TypeError, match="x must have dtype"):
        layernorm(x.to(torch.int32), w, b, 1e-5)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        layernorm(x.tolist(), w, b, 1e-5)
    with pytest.raises(ValueError, match="weight must have shape"):
        layernorm(x, w[:40], b, 1e-5)
    with pytest.raises(ValueError, match="bias must have shape"):
        layernorm(x, w, b[:40], 1e-5)
    with pytest.raises(TypeError, match="weight has dtype"):
        layernorm(x, w.half(), b, 1e-5)
    with pytest.raises(ValueError, match="residual must have shape"):
        layernorm(x, w, b, 1e-5, residual=x[:3])
    with pytest.raises(TypeError, match="residual has dtype"):
        layernorm(x, w, b, 1e-5, residual=x.half())
    with pytest.raises(ValueError, match="eps"):
        layernorm(x, w, b, 0.0)
    with pytest.raises(ValueError, match="out must have shape"):
        layernorm(x, w, b, 1e-5, out=torch.empty(4, 47, device=DEVICE))
    with pytest.raises(TypeError, match="out must have dtype"):
        layernorm(x, w, b, 1e-5, out=torch.empty(4, 48, device=DEVICE, dtype=torch.float16))
    with pytest.raises(ValueError, match="weight is on meta"):
        layernorm(x, w.to("meta"), b, 1e-5)
    with pytest.raises(ValueError, match="out overlaps x"):
        layernorm(x, w, b, 1e-5, out=x)


# --------------------------------------------------------------------------- bias + residual + LayerNorm
def _check_fused(y, bias, residual, weight, ln_bias, eps, out, dtype, what):
    ref = bias_residual_layernorm_ref(
        y, bias, residual, weight, ln_bias, eps, compute_dtype=torch.float64, out_dtype=torch.float64
    )
    h = y if bias is None else y + bias  # torch's own unfused ops, in dtype
    h = h if residual is None else h + residual
    same = F.layer_norm(h, (y.shape[-1],), weight, ln_bias, eps)
    assert_within_torch_error(out, ref, same, dtype, what)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T", [1, 33, 127, 257])
@pytest.mark.parametrize("H", [48, 96])
@pytest.mark.parametrize("with_bias", [True, False])
def test_bias_residual_layernorm_matches_reference(dtype, T, H, with_bias):
    y = (2.0 * torch.randn(T, H, device=DEVICE) + 0.3).to(dtype)  # a GEMM output without its bias
    bias = (0.5 * torch.randn(H, device=DEVICE)).to(dtype) if with_bias else None
    residual = torch.randn(T, H, device=DEVICE).to(dtype)
    weight, ln_bias = _params(H, dtype)
    out = torch.full((T, H), float("nan"), dtype=dtype, device=DEVICE)
    got = bias_residual_layernorm(y, bias, residual, weight, ln_bias, 1e-12, out=out)
    assert got is out
    _check_fused(y, bias, residual, weight, ln_bias, 1e-12, out, dtype, f"bias+res+LN T={T} H={H} bias={with_bias}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_bias_residual_layernorm_bert_hidden_size_without_residual(dtype):
    T, H = 9, 768  # BLOCK_H = 1024 > H; residual None: LayerNorm(y + bias)
    y = torch.randn(T, H, device=DEVICE).to(dtype)
    bias = torch.randn(H, device=DEVICE).to(dtype)
    weight, ln_bias = _params(H, dtype)
    got = bias_residual_layernorm(y, bias, None, weight, ln_bias, 1e-5)
    assert got.dtype == dtype and got.shape == (T, H)
    _check_fused(y, bias, None, weight, ln_bias, 1e-5, got, dtype, "bias+LN H=768")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_bias_residual_layernorm_strided_inputs_and_output(dtype):
    T, H = 127, 48
    y = torch.randn(T, 3 * H, device=DEVICE).to(dtype)[:, 2 * H :]  # a column slice: row stride 3H
    residual = torch.randn(T, H + 7, device=DEVICE).to(dtype)[:, 7:]  # row stride H + 7, odd offset
    assert not y.is_contiguous() and not residual.is_contiguous()
    bias = torch.randn(2 * H, device=DEVICE).to(dtype)[::2]  # a strided [H] vector
    weight, ln_bias = _params(H, dtype)
    buf = torch.full((T, H + 5), float("nan"), dtype=dtype, device=DEVICE)
    out = buf[:, 5:]
    bias_residual_layernorm(y, bias, residual, weight, ln_bias, 1e-12, out=out)
    _check_fused(y, bias, residual, weight, ln_bias, 1e-12, out, dtype, "bias+res+LN strided")
    assert torch.isnan(buf[:, :5]).all(), "wrote outside the output view"


def test_bias_residual_layernorm_ref_is_textbook():
    y, r = torch.randn(5, 48, dtype=torch.float64), torch.randn(5, 48, dtype=torch.float64)
    bias, weight, ln_bias = (torch.randn(48, dtype=torch.float64) for _ in range(3))
    ref = bias_residual_layernorm_ref(y, bias, r, weight, ln_bias, 1e-6, compute_dtype=torch.float64)
    assert_close(ref, F.layer_norm(y + bias + r, (48,), weight, ln_bias, 1e-6), 1e-12, "bias_residual_layernorm_ref")


def test_bias_residual_layernorm_empty_rows():
    w, b = _params(48, torch.float32)
    y = torch.randn(0, 48, device=DEVICE)
    assert bias_residual_layernorm(y, b, y, w, b, 1e-5).shape == (0, 48)


def test_bias_residual_layernorm_bad_inputs():
    y, r = torch.randn(4, 48, device=DEVICE), torch.randn(4, 48, device=DEVICE)
    w, b = _params(48, torch.float32)
    with pytest.raises(ValueError, match="y must be 2-D"):
        bias_residual_layernorm(y[0], b, r, w, b, 1e-5)
    with pytest.raises(ValueError, match="bias must have shape"):
        bias_residual_layernorm(y, b[:47], r, w, b, 1e-5)
    with pytest.raises(ValueError, match="bias must be 1-D"):
        bias_residual_layernorm(y, y, r, w, b, 1e-5)
    with pytest.raises(ValueError, match="ln_bias must have shape"):
        bias_residual_layernorm(y, b, r, w, b[:47], 1e-5)
    with pytest.raises(ValueError, match="residual must have shape"):
        bias_residual_layernorm(y, b, r[:3], w, b, 1e-5)
    with pytest.raises(TypeError, match="bias has dtype"):
        bias_residual_layernorm(y, b.half(), r, w, b, 1e-5)
    with pytest.raises(TypeError, match="residual has dtype"):
        bias_residual_layernorm(y, b, r.half(), w, b, 1e-5)
    with pytest.raises(ValueError, match="eps"):
        bias_residual_layernorm(y, b, r, w, b, float("nan"))
    with pytest.raises(ValueError, match="out overlaps residual"):
        bias_residual_layernorm(y, b, r, w, b, 1e-5, out=r)
    with pytest.raises(ValueError, match="ln_bias is on meta"):
        bias_residual_layernorm(y, b, r, w, b.to("meta"), 1e-5)
