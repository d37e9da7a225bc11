"""layernorm: LayerNorm(x + residual) over the last dim, fp32 statistics, against fp64 and torch's own error."""

from __future__ import annotations

import zlib

import pytest
import torch
import torch.nn.functional as F

from bertfast.kernels import layernorm, layernorm_ref

from .helpers import assert_close, assert_within_torch_error

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPES = [
    torch.float32,
    torch.float16,
    pytest.param(torch.bfloat16, marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 needs CUDA")),
]


@pytest.fixture(autouse=True)
def _seed(request):
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))


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
@pytest.mark.parametrize("T", [1, 33, 257])
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
    x = wide[:, H + 5:2 * H + 5]  # row stride 3H, offset start
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
