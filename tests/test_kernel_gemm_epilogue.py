"""epilogue.bias_activation: act(y + bias) (+ residual) in one fp32 pass after a cuBLAS product."""

from __future__ import annotations

import pytest
import torch

from bertfast import activations
from bertfast.kernels.epilogue import bias_activation, bias_activation_ref

from .helpers import (
    DEVICE,
    KERNEL_DTYPES,
    assert_within_torch_error,
    seed_from_test_id,  # noqa: F401  (autouse: a fresh seed per test, from its id)
)

DTYPES = KERNEL_DTYPES


def _operands(T, N, dtype, with_bias=True, with_residual=False):
    y = (2.0 * torch.randn(T, N, device=DEVICE)).to(dtype)  # spread over every activation's nonlinear range
    bias = (0.5 * torch.randn(N, device=DEVICE)).to(dtype) if with_bias else None
    residual = torch.randn(T, N, device=DEVICE).to(dtype) if with_residual else None
    return y, bias, residual


def _check(out, y, bias, activation, residual, dtype, what):
    ref = bias_activation_ref(
        y, bias, activation, residual=residual, compute_dtype=torch.float64, out_dtype=torch.float64
    )
    same = y if bias is None else y + bias  # torch's own unfused ops in dtype
    same = activations.apply(same, activation)
    if residual is not None:
        same = same + residual
    assert_within_torch_error(out, ref, same, dtype, what)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", [None, *activations.NAMES])
def test_bias_activation_every_activation(dtype, activation):
    y, bias, _ = _operands(33, 100, dtype)
    out = torch.full_like(y, float("nan"))
    assert bias_activation(y, bias, activation, out) is out
    _check(out, y, bias, activation, None, dtype, f"bias_activation {activation}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("T,N", [(1, 48), (257, 33), (3, 4100)])  # 4100 > one 4096-column block
@pytest.mark.parametrize("with_bias,with_residual", [(True, False), (False, True), (True, True)])
def test_bias_activation_sizes_bias_residual(dtype, T, N, with_bias, with_residual):
    y, bias, residual = _operands(T, N, dtype, with_bias, with_residual)
    out = bias_activation(y, bias, "gelu", residual=residual)
    _check(out, y, bias, "gelu", residual, dtype, f"bias_activation T={T} N={N}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_bias_activation_in_place(dtype):
    y, bias, residual = _operands(65, 96, dtype, with_residual=True)
    y0 = y.clone()
    assert bias_activation(y, bias, "gelu_tanh", y, residual=residual) is y
    _check(y, y0, bias, "gelu_tanh", residual, dtype, "bias_activation in place")


def test_bias_activation_strided():
    T, N = 37, 80
    y = (2.0 * torch.randn(N, T, device=DEVICE)).t()  # [T, N] column-major
    bias = torch.randn(2 * N, device=DEVICE)[::2]
    residual = torch.randn(T, 2 * N, device=DEVICE)[:, N:]
    buf = torch.full((T, N + 5), float("nan"), device=DEVICE)
    out = buf[:, 5:]
    bias_activation(y, bias, "silu", out, residual=residual)
    _check(out, y, bias, "silu", residual, torch.float32, "bias_activation strided")
    assert torch.isnan(buf[:, :5]).all(), "wrote outside the output view"


def test_bias_activation_bad_inputs():
    y, bias, residual = _operands(8, 16, torch.float32, with_residual=True)
    with pytest.raises(ValueError, match="activation must be None or one of"):
        bias_activation(y, bias, "gelu_new")
    with pytest.raises(ValueError, match="bias must have shape"):
        bias_activation(y, bias[:15], None)
    with pytest.raises(ValueError, match="residual must have shape"):
        bias_activation(y, bias, None, residual=residual[:, :3])
    with pytest.raises(TypeError, match="bias has dtype"):
        bias_activation(y, bias.half(), None)
    with pytest.raises(ValueError, match="out overlaps residual"):
        bias_activation(y, bias, "relu", residual, residual=residual)
    with pytest.raises(ValueError, match="out overlaps y"):
        bias_activation(y[:7], bias, "relu", y[1:])  # out shifted one row against y: not in place
    with pytest.raises(TypeError, match="y must be a torch.Tensor"):
        bias_activation(y.tolist(), bias, None)
