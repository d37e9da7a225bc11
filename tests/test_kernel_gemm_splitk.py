"""gemm_splitk.linear_splitk: K split over programs, fp32 partials, a fixed-order reduce with the epilogue."""

from __future__ import annotations

import pytest
import torch

from bertfast.kernels import gemm_splitk
from bertfast.kernels.gemm_splitk import linear_splitk, splitk_plan
from bertfast.kernels.state import launch_state

from .helpers import (
    CUDA,
    seed_from_test_id,  # noqa: F401  (autouse: a fresh seed per test, from its id)
)
from .test_kernel_gemm import DEVICE, _check, _operands


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("M", [1, 33, 127, 257])
@pytest.mark.parametrize("split_k", [None, 1, 3, 7])
def test_splitk_values(dtype, M, split_k):
    N, K = 70, 100  # neither a multiple of the blocks; 100 = 3 x 32 + 4: a partial last K block
    x, weight, bias, residual = _operands(M, N, K, dtype)
    out = torch.full((M, N), float("nan"), dtype=dtype, device=DEVICE)
    assert linear_splitk(x, weight, bias, "gelu", residual, out=out, split_k=split_k) is out
    _check(x, weight, bias, "gelu", residual, out, dtype, f"splitk M={M} split_k={split_k}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("N,K,activation", [(17, 129, None), (1, 40, "tanh"), (48, 96, "quick_gelu")])
def test_splitk_sizes_and_epilogues(dtype, N, K, activation):
    x, weight, bias, residual = _operands(9, N, K, dtype, with_residual=activation is None)
    out = linear_splitk(x, weight, bias, activation, residual, split_k=4)
    _check(x, weight, bias, activation, residual, out, dtype, f"splitk N={N} K={K} {activation}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_splitk_strided_operands(dtype):
    M, N, K = 33, 80, 72
    x = torch.randn(M, 2 * K + 3, device=DEVICE).to(dtype)[:, 3 : 3 + K]
    weight = (torch.randn(K, N, device=DEVICE) / K**0.5).to(dtype).t()  # unit stride along N
    bias = torch.randn(2 * N, device=DEVICE).to(dtype)[::2]
    residual = torch.randn(M, 2 * N, device=DEVICE).to(dtype)[:, N:]
    buf = torch.full((M, N + 8), float("nan"), dtype=dtype, device=DEVICE)
    out = buf[:, 8:]
    linear_splitk(x, weight, bias, "silu", residual, out=out, split_k=3)
    _check(x, weight, bias, "silu", residual, out, dtype, "splitk strided")
    assert torch.isnan(buf[:, :8]).all(), "wrote outside the output view"


def test_splitk_is_deterministic():
    x, weight, bias, residual = _operands(5, 64, 160, torch.float32)
    first = linear_splitk(x, weight, bias, "gelu", residual, split_k=5)
    for _ in range(2):
        assert torch.equal(linear_splitk(x, weight, bias, "gelu", residual, split_k=5), first)


def test_splitk_explicit_config():
    x, weight, bias, residual = _operands(20, 50, 90, torch.float32)
    cfg = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "SPLIT_K": 4, "num_warps": 2, "num_stages": 1}
    out = linear_splitk(x, weight, bias, "relu", residual, config=cfg)
    _check(x, weight, bias, "relu", residual, out, torch.float32, "splitk config")


@pytest.mark.parametrize("K", [1, 31, 32, 33, 100, 768, 3072, 3073])
@pytest.mark.parametrize("block_k", [16, 32, 64])
@pytest.mark.parametrize("split_k", [1, 2, 3, 7, 12, 64])
def test_splitk_plan_covers_k_without_empty_splits(K, block_k, split_k):
    k_per_split, splits = splitk_plan(K, block_k, split_k)
    assert k_per_split % block_k == 0
    assert 1 <= splits <= split_k
    assert (splits - 1) * k_per_split < K <= splits * k_per_split, "every split non-empty, K covered"


def test_splitk_bad_inputs():
    x, weight, bias, _ = _operands(4, 16, 32, torch.float32)
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="split_k must be a positive int"):
            linear_splitk(x, weight, bias, split_k=bad)
    with pytest.raises(ValueError, match="config is missing"):
        linear_splitk(x, weight, config={"BLOCK_M": 16})
    with pytest.raises(ValueError, match="weight must have shape"):
        linear_splitk(x, weight[:, :5])
    with pytest.raises(ValueError, match="activation must be None"):
        linear_splitk(x, weight, activation="swish")


def test_splitk_empty_rows():
    x, weight, bias, _ = _operands(0, 16, 32, torch.float32, with_residual=False)
    assert linear_splitk(x, weight, bias).shape == (0, 16)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("M", [1, 16, 128, 256])
def test_splitk_bert_base_shapes_on_gpu(dtype, M):
    for N, K, act in [(2304, 768, None), (3072, 768, "gelu"), (768, 3072, None)]:
        x, weight, bias, residual = _operands(M, N, K, dtype, with_residual=act is None)
        _check(
            x,
            weight,
            bias,
            act,
            residual,
            linear_splitk(x, weight, bias, act, residual),
            dtype,
            f"splitk M={M} N={N} K={K}",
        )
        state = launch_state(x.device)
        key = (max(16, M), N, K, "tf32", str(dtype).replace("torch.", ""), state.num_sms)
        cfg = state.config(gemm_splitk.KERNEL, key, gemm_splitk._splitk_heuristic)
        assert cfg["SPLIT_K"] >= 1
