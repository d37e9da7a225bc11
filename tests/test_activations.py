"""bertfast.activations: the one table of activation names, their torch functions and kernel names."""

from __future__ import annotations

import math

import pytest
import torch

from bertfast import activations, config, reference

from .helpers import FP64_ATOL, assert_close


def _textbook(name: str, x: torch.Tensor) -> torch.Tensor:
    """Each curve from its definition, written here independently of the code under test (fp64)."""
    phi = 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))  # the standard normal CDF
    tanh_gelu = 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    return {
        "gelu": x * phi,
        "gelu_tanh": tanh_gelu,
        "gelu_fast": tanh_gelu,
        "quick_gelu": x / (1.0 + torch.exp(-1.702 * x)),
        "relu": torch.where(x > 0, x, torch.zeros_like(x)),
        "silu": x / (1.0 + torch.exp(-x)),
        "tanh": (torch.exp(x) - torch.exp(-x)) / (torch.exp(x) + torch.exp(-x)),
    }[name]


X = torch.cat([torch.linspace(-8.0, 8.0, 2001, dtype=torch.float64), torch.randn(1000, dtype=torch.float64) * 3])


@pytest.mark.parametrize("name", activations.NAMES)
def test_torch_function_is_the_textbook_formula_in_fp64(name):
    # gelu_fast's rounded sqrt(2/pi) (0.7978845608 vs 0.79788456080286...) moves it by < 1e-10.
    assert_close(activations.ACTIVATIONS[name].torch(X), _textbook(name, X), FP64_ATOL, f"activations[{name!r}]")


@pytest.mark.parametrize("name", activations.NAMES)
def test_torch_function_matches_the_separate_fp64_oracle(name):
    assert_close(activations.apply(X, name), reference.activation_ref(X, name), FP64_ATOL, f"oracle {name!r}")


def test_names_are_the_config_canonical_names():
    assert set(activations.NAMES) == set(config.ACTIVATIONS.values())


def test_kernel_names_are_the_same_curve():
    """Names sharing a kernel branch compute the same function (so sharing it is exact)."""
    for name, act in activations.ACTIVATIONS.items():
        assert act.kernel in activations.ACTIVATIONS, name
        assert_close(_textbook(act.kernel, X), _textbook(name, X), FP64_ATOL, f"{name} runs {act.kernel}")
    assert activations.kernel_name(None) == "" and activations.kernel_name("gelu_fast") == "gelu_tanh"


def test_kernels_validate_against_this_table():
    from bertfast.kernels import gemm

    assert gemm.ACTIVATIONS == activations.NAMES
    assert gemm._SAME_AS == {"gelu_fast": "gelu_tanh"}


def test_unknown_name_raises_naming_the_argument():
    assert activations.apply(X, None) is X
    with pytest.raises(ValueError, match="activation must be None or one of"):
        activations.apply(X, "gelu_new")  # an HF spelling: config.ACTIVATIONS maps it, not this table
    with pytest.raises(ValueError, match="hidden_act must be"):
        activations.check_name("swish", "hidden_act")


def test_is_a_torch_only_leaf():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(activations))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"__future__", "collections", "typing", "torch"}, imported
