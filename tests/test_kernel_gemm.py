"""triton_linear: x @ weight^T + bias -> activation -> + residual, fused in the GEMM epilogue."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bertfast.kernels import ACTIVATIONS, activation_ref, interpreting, linear_ref
from bertfast.kernels import gemm as gemm_module
from bertfast.kernels import triton_linear as linear
from bertfast.kernels._configs import from_triton
from bertfast.kernels.state import launch_state

from .helpers import (
    CUDA,
    DEVICE,
    KERNEL_DTYPES,
    assert_close,
    assert_within_torch_error,
    seed_from_test_id,  # noqa: F401  (autouse: a fresh seed per test, from its id)
)

DTYPES = KERNEL_DTYPES


def _torch_activation(y, activation):
    """PyTorch's own ops for each activation (what an unfused model would run)."""
    return {
        None: lambda t: t,
        "gelu": F.gelu,
        "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
        "gelu_fast": lambda t: F.gelu(t, approximate="tanh"),
        "quick_gelu": lambda t: t * torch.sigmoid(1.702 * t),
        "relu": F.relu,
        "silu": F.silu,
        "tanh": torch.tanh,
    }[activation](y)


def _operands(T, N, K, dtype, with_bias=True, with_residual=True):
    x = torch.randn(T, K, device=DEVICE).to(dtype)
    weight = (torch.randn(N, K, device=DEVICE) / K**0.5).to(dtype)  # outputs ~ N(0, 1), like a real layer
    bias = (0.5 * torch.randn(N, device=DEVICE)).to(dtype) if with_bias else None
    residual = torch.randn(T, N, device=DEVICE).to(dtype) if with_residual else None
    return x, weight, bias, residual


def _check(x, weight, bias, activation, residual, out, dtype, what):
    ref = linear_ref(x, weight, bias, activation, residual, compute_dtype=torch.float64, out_dtype=torch.float64)
    same = _torch_activation(F.linear(x, weight, bias), activation)  # torch's own unfused ops, in dtype
    if residual is not None:
        same = same + residual
    assert_within_torch_error(out, ref, same, dtype, what)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", [None, *ACTIVATIONS])
def test_linear_every_activation(dtype, activation):
    T, N, K = 33, 96, 48
    x, weight, bias, residual = _operands(T, N, K, dtype)
    x = 2.0 * x  # spread pre-activations over the nonlinear range of every activation
    out = torch.full((T, N), float("nan"), dtype=dtype, device=DEVICE)
    got = linear(x, weight, bias, activation, residual, out=out)
    assert got is out
    _check(x, weight, bias, activation, residual, out, dtype, f"linear act={activation}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T", [1, 33, 127, 257])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("with_residual", [False, True])
def test_linear_bias_and_residual(dtype, T, with_bias, with_residual):
    N, K = 48, 96  # K = 3 x BLOCK_K under the interpreter: the unmasked EVEN_K path
    x, weight, bias, residual = _operands(T, N, K, dtype, with_bias, with_residual)
    out = torch.full((T, N), float("nan"), dtype=dtype, device=DEVICE)
    linear(x, weight, bias, "gelu", residual, out=out)
    _check(x, weight, bias, "gelu", residual, out, dtype, f"linear T={T} bias={with_bias} res={with_residual}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("N,K", [(100, 72), (17, 129), (1, 40)])
def test_linear_sizes_not_multiples_of_the_block(dtype, N, K):
    x, weight, bias, residual = _operands(37, N, K, dtype)
    out = linear(x, weight, bias, None, residual)
    _check(x, weight, bias, None, residual, out, dtype, f"linear N={N} K={K}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_linear_strided_operands(dtype):
    T, N, K = 65, 80, 48
    x_wide = torch.randn(T, 2 * K + 3, device=DEVICE).to(dtype)
    x = x_wide[:, 3 : 3 + K]  # column slice: row stride 2K + 3, unaligned start
    weight = (torch.randn(K, N, device=DEVICE) / K**0.5).to(dtype).t()  # [N, K] with unit stride along N
    bias = torch.randn(2 * N, device=DEVICE).to(dtype)[::2]  # strided bias
    residual = torch.randn(T, 2 * N, device=DEVICE).to(dtype)[:, N:]
    buf = torch.full((T, N + 8), float("nan"), dtype=dtype, device=DEVICE)
    out = buf[:, 8:]
    linear(x, weight, bias, "silu", residual, out=out)
    _check(x, weight, bias, "silu", residual, out, dtype, "linear strided")
    assert torch.isnan(buf[:, :8]).all(), "wrote outside the output view"


@pytest.mark.parametrize(
    "config",
    [
        {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 16, "GROUP_M": 1},
        {"BLOCK_M": 64, "BLOCK_N": 16, "BLOCK_K": 64, "GROUP_M": 2, "num_warps": 2},
        {"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 32, "GROUP_M": 3, "num_stages": 2},
    ],
)
def test_linear_explicit_block_sizes(config):
    """Every tile shape the launcher can be told to use computes the same thing (grouped order, tails)."""
    x, weight, bias, residual = _operands(129, 72, 56, torch.float32)
    out = torch.full((129, 72), float("nan"), device=DEVICE)
    linear(x, weight, bias, "gelu_tanh", residual, out=out, config=config)
    _check(x, weight, bias, "gelu_tanh", residual, out, torch.float32, f"linear config={config}")


def test_linear_tf32_on_request():
    x, weight, bias, _ = _operands(33, 48, 64, torch.float32, with_residual=False)
    out = linear(x, weight, bias, input_precision="tf32")
    ref = linear_ref(x, weight, bias, compute_dtype=torch.float64, out_dtype=torch.float64)
    assert_close(out, ref, 2e-2, "linear tf32")  # tf32 keeps 10 mantissa bits


def test_linear_empty_rows():
    x, weight, bias, _ = _operands(0, 48, 32, torch.float32, with_residual=False)
    assert linear(x, weight, bias).shape == (0, 48)


def test_activation_ref_matches_torch():
    y = torch.linspace(-12, 12, 1001, dtype=torch.float64)
    for name in ACTIVATIONS:
        assert_close(activation_ref(y, name), _torch_activation(y, name), 1e-12, f"activation_ref {name}")


def test_linear_bad_inputs():
    x, weight, bias, residual = _operands(8, 16, 32, torch.float32)
    with pytest.raises(ValueError, match="activation must be None or one of"):
        linear(x, weight, bias, "gelu_new")
    with pytest.raises(ValueError, match="weight must have shape"):
        linear(x, weight[:, :31])
    with pytest.raises(ValueError, match="x must be 2-D"):
        linear(x[None], weight)
    with pytest.raises(ValueError, match="bias must have shape"):
        linear(x, weight, bias[:15])
    with pytest.raises(ValueError, match="residual must have shape"):
        linear(x, weight, bias, residual=residual[:, :15])
    with pytest.raises(TypeError, match="weight has dtype"):
        linear(x, weight.half())
    with pytest.raises(TypeError, match="residual has dtype"):
        linear(x, weight, residual=residual.half())
    with pytest.raises(TypeError, match="x must have dtype"):
        linear(x.to(torch.int64), weight.to(torch.int64))
    with pytest.raises(ValueError, match="input_precision"):
        linear(x, weight, input_precision="fp8")
    with pytest.raises(ValueError, match="config is missing"):
        linear(x, weight, config={"BLOCK_M": 32})
    with pytest.raises(ValueError, match="bias is on meta"):
        linear(x, weight, bias.to("meta"))
    with pytest.raises(ValueError, match="out overlaps residual"):
        linear(x, weight, bias, residual=residual, out=residual)


def test_gemm_autotune_pruning():
    """The GPU config list: fp32 drops the tiles that overflow shared memory, tiny M drops 128-row tiles."""
    prune = gemm_module._prune_gemm_configs
    configs = gemm_module.GEMM_GPU_CONFIGS
    x16, x32 = torch.empty(1, 1, dtype=torch.float16), torch.empty(1, 1, dtype=torch.float32)
    big16 = prune(configs, {"x_ptr": x16, "M_BUCKET": 4096, "N": 2304})
    assert big16 == configs
    big32 = prune(configs, {"x_ptr": x32, "M_BUCKET": 4096, "N": 768})
    assert 0 < len(big32) < len(configs)
    for c in big32:
        k = c.kwargs
        assert c.num_stages * 4 * (k["BLOCK_M"] + k["BLOCK_N"]) * k["BLOCK_K"] <= 200 * 1024
    small = prune(configs, {"x_ptr": x16, "M_BUCKET": 16, "N": 768})
    assert small and all(c.kwargs["BLOCK_M"] <= 64 for c in small)


@pytest.fixture
def fresh_gemm_configs():
    """The device's launch state with no known Triton-GEMM config, its known ones restored after."""
    state = launch_state(DEVICE)
    saved = state.known_configs(gemm_module.KERNEL)
    state.clear_configs(gemm_module.KERNEL)
    yield state
    state.clear_configs(gemm_module.KERNEL)
    for key, config in saved.items():
        state.put_config(gemm_module.KERNEL, key, config)


def _key(x, weight, bias, activation, residual):
    return gemm_module.config_key(
        x.shape[0],
        weight.shape[0],
        x.shape[1],
        bias is not None,
        residual is not None,
        activation or "",
        "ieee" if x.dtype == torch.float32 else "tf32",
        x.dtype,
    )


def test_linear_default_path_never_autotunes(fresh_gemm_configs, monkeypatch):
    """The first call of a shape asks the config table (heuristic), never Triton's autotuner, and the
    heuristic runs once per key: later calls in the same M bucket reuse the memoised config."""

    def no_autotuner(*args, **kwargs):
        raise AssertionError("the default path ran the autotuner")

    monkeypatch.setattr(gemm_module._linear_fwd_tuned, "run", no_autotuner)
    calls = []
    heuristic = gemm_module._gemm_heuristic
    monkeypatch.setattr(gemm_module, "_gemm_heuristic", lambda key: calls.append(key) or heuristic(key))
    for T in (20, 31, 17):  # one M bucket (32)
        x, weight, bias, residual = _operands(T, 40, 48, torch.float32)
        out = torch.full((T, 40), float("nan"), device=DEVICE)
        linear(x, weight, bias, "relu", residual, out=out)
        _check(x, weight, bias, "relu", residual, out, torch.float32, f"linear T={T} from the table")
    key = _key(x, weight, bias, "relu", residual)
    assert calls == [key], "the heuristic runs once per key"
    assert fresh_gemm_configs.config_source(gemm_module.KERNEL, key) == "heuristic"
    if interpreting():
        config = fresh_gemm_configs.config(gemm_module.KERNEL, key, heuristic)
        assert config == from_triton(gemm_module.GEMM_INTERPRETER_CONFIG)


def test_linear_uses_a_config_put_into_the_table(fresh_gemm_configs):
    x, weight, bias, residual = _operands(45, 72, 40, torch.float32)
    key = _key(x, weight, bias, "silu", residual)
    linear(x, weight, bias, "silu", residual)
    tuned = {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 16, "GROUP_M": 2, "num_warps": 2, "num_stages": 1}
    version = fresh_gemm_configs.version
    fresh_gemm_configs.put_config(gemm_module.KERNEL, key, tuned)
    assert fresh_gemm_configs.version == version + 1
    out = torch.full((45, 72), float("nan"), device=DEVICE)
    linear(x, weight, bias, "silu", residual, out=out)
    _check(x, weight, bias, "silu", residual, out, torch.float32, "linear with a put() config")
    kwargs, block_m, block_n = fresh_gemm_configs.memo(gemm_module.KERNEL, key, lambda k: pytest.fail("not memoised"))
    assert (block_m, block_n) == (16, 64) and kwargs["EVEN_K"] is False and kwargs["BLOCK_K"] == 16
    assert fresh_gemm_configs.config_source(gemm_module.KERNEL, key) == "table"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_linear_autotune_runs_tritons_autotuner_and_records_the_winner(fresh_gemm_configs, dtype):
    x, weight, bias, residual = _operands(33, 56, 64, dtype)
    out = torch.full((33, 56), float("nan"), dtype=dtype, device=DEVICE)
    linear(x, weight, bias, "gelu", residual, out=out, autotune=True)
    _check(x, weight, bias, "gelu", residual, out, dtype, "linear autotune=True")
    key = _key(x, weight, bias, "gelu", residual)
    winner = gemm_module._linear_fwd_tuned.best_config
    assert fresh_gemm_configs.known_configs(gemm_module.KERNEL) == {key: from_triton(winner)}


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA or interpreting(), reason="needs a CUDA device (compiled kernels)")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_linear_every_gpu_config_at_bert_base_sizes(dtype):
    """Each autotune candidate is checked on its own (llm.c style), at BERT-base FFN shapes."""
    T, N, K = 1000, 3072, 768  # T not a multiple of any BLOCK_M
    x, weight, bias, residual = _operands(T, N, K, dtype)
    for c in gemm_module._prune_gemm_configs(gemm_module.GEMM_GPU_CONFIGS, {"x_ptr": x, "M_BUCKET": 1024, "N": N}):
        cfg = dict(c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages)
        out = torch.full((T, N), float("nan"), dtype=dtype, device=DEVICE)
        linear(x, weight, bias, "gelu", residual, out=out, config=cfg)
        _check(x, weight, bias, "gelu", residual, out, dtype, f"linear config={cfg}")
    out = linear(x, weight, bias, "gelu", residual)  # the autotuned path
    _check(x, weight, bias, "gelu", residual, out, dtype, "linear autotuned")
