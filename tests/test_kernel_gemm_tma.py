"""gemm_tma.linear_tma: tensor-descriptor loads, a persistent tile loop, the fused epilogue.

The Triton 3.6 interpreter runs tensor descriptors, so values are checked on the CPU too (fp16; the
interpreter has no bf16 arithmetic). Under the interpreter the persistent grid is 4 programs, so every
shape with more than 4 tiles exercises the tile loop."""

from __future__ import annotations

import contextvars

import pytest
import torch

from bertfast.kernels import gemm_tma
from bertfast.kernels.gemm_tma import linear_tma

from .helpers import (
    CUDA,
    seed_from_test_id,  # noqa: F401  (autouse: a fresh seed per test, from its id)
)
from .test_kernel_gemm import DEVICE, _check, _operands

HOPPER = CUDA and torch.cuda.get_device_capability()[0] >= 9
DTYPES = [torch.float16, pytest.param(torch.bfloat16, marks=pytest.mark.skipif(not HOPPER, reason="bf16 on Hopper"))]
pytestmark = pytest.mark.skipif(CUDA and not HOPPER, reason="tensor descriptors need sm_90 on a GPU")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M", [1, 33, 127, 257])
@pytest.mark.parametrize("activation", [None, "gelu"])
def test_tma_values(dtype, M, activation):
    N, K = 100, 72  # not multiples of the blocks: the descriptors zero-fill past N and K
    x, weight, bias, residual = _operands(M, N, K, dtype)
    out = torch.full((M, N), float("nan"), dtype=dtype, device=DEVICE)
    assert linear_tma(x, weight, bias, activation, residual, out=out) is out
    _check(x, weight, bias, activation, residual, out, dtype, f"tma M={M} {activation}")


@pytest.mark.parametrize("N,K", [(17, 136), (1, 40), (96, 8)])
def test_tma_sizes_without_bias_or_residual(N, K):
    x, weight, _, _ = _operands(45, N, K, torch.float16, with_bias=False, with_residual=False)
    out = linear_tma(x, weight, activation="relu")
    _check(x, weight, None, "relu", None, out, torch.float16, f"tma N={N} K={K}")


def test_tma_aligned_strided_operands():
    M, N, K = 65, 80, 48
    x = torch.randn(M, 2 * K + 8, device=DEVICE).half()[:, 8 : 8 + K]  # row stride 104 halves (208 B), base +16 B
    weight = (torch.randn(N, K + 16, device=DEVICE) / K**0.5).half()[:, :K]
    bias = torch.randn(2 * N, device=DEVICE).half()[::2]
    residual = torch.randn(N, M, device=DEVICE).half().t()  # column-major residual
    buf = torch.full((M, N + 8), float("nan"), dtype=torch.float16, device=DEVICE)
    out = buf[:, 8:]
    linear_tma(x, weight, bias, "silu", residual, out=out)
    _check(x, weight, bias, "silu", residual, out, torch.float16, "tma strided")
    assert torch.isnan(buf[:, :8]).all(), "wrote outside the output view"


def test_tma_explicit_config():
    x, weight, bias, residual = _operands(70, 90, 64, torch.float16)
    cfg = {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 16, "GROUP_M": 3, "num_warps": 4, "num_stages": 1}
    out = linear_tma(x, weight, bias, "gelu_tanh", residual, config=cfg)
    _check(x, weight, bias, "gelu_tanh", residual, out, torch.float16, "tma config")


def test_tma_refuses_what_descriptors_cannot_read():
    x, weight, _, _ = _operands(8, 16, 32, torch.float16, with_residual=False)
    with pytest.raises(TypeError, match="float16 / bfloat16 only"):
        linear_tma(x.float(), weight.float())
    with pytest.raises(ValueError, match="x must have unit stride along K"):
        linear_tma(x.t().contiguous().t(), weight)
    with pytest.raises(ValueError, match="x's data pointer must be 16-byte aligned"):
        linear_tma(torch.randn(8, 33, device=DEVICE).half()[:, 1:], weight)
    with pytest.raises(ValueError, match="weight's row stride"):
        linear_tma(x, torch.randn(16, 36, device=DEVICE).half()[:, :32])
    assert gemm_tma.layout_reasons(x, weight) == []


def test_allocator_installed_once_and_a_callers_kept():
    """Triton keeps its allocator in a ContextVar: run each case in a fresh context."""
    from triton.runtime._allocation import _allocator

    def fresh():
        gemm_tma._ensure_allocator()
        return _allocator.get()

    assert contextvars.Context().run(fresh) is gemm_tma._torch_allocator

    def callers_own():
        import triton

        def mine(size, alignment, stream):
            raise AssertionError("not called here")

        triton.set_allocator(mine)
        gemm_tma._ensure_allocator()
        return _allocator.get() is mine

    assert contextvars.Context().run(callers_own)
