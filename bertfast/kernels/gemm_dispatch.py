"""The fastest correct GEMM per shape: cuBLAS + a fused epilogue, the Triton GEMM, split-K, or Hopper TMA.

    linear(x [M, K], weight [N, K], bias, activation, residual) -> out [M, N]
    linear_residual_layernorm(...) -> LayerNorm(x @ W^T + bias + residual)

Each public entry point is its checks (`check_linear`, `check_linear_residual_layernorm`) followed by
its launcher (`launch_linear`, `launch_linear_residual_layernorm`); the model calls the launchers on
operands validated once at its boundary. The implementations and what each supports are declared in
gemm_impls.py. Which one runs is decided per key (M bucket, N, K, epilogue name, dtype name):

  1. the device's choice table (`launch_state(device).gemm_choice(key)`: tables/<gpu-slug>.json,
     measured by `measure_choices` and written by `write_table`), else gemm_impls.DEFAULT;
  2. if that implementation cannot run the call (its `not_supported_reasons`), the first of
     gemm_impls.PRIORITY that can.
The decision is memoised per key in the launch state: a hot call costs one dict lookup (plus the
operand-layout check of an implementation that declares one).

Under the Triton interpreter (CPU tensors) every choice runs too ("cublas" is torch.mm on the CPU), so
the tests check that all of them compute the same function.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Optional

import torch

from .. import _dtypes
from .. import activations as _act
from . import _utils, gemm
from .choice_table import (
    CHOICES,
    TABLE_FORMAT,
    ChoiceTable,
    choice_key,
    default_table_path,
    epilogue_name,
    load_choice_table,
    parse_epilogue,
    write_table,
)
from .gemm_impls import DEFAULT, IMPLEMENTATIONS, PRIORITY, GemmImpl
from .state import LaunchState, launch_state, set_choice_table

__all__ = [
    "CHOICES",
    "TABLE_FORMAT",
    "ChoiceTable",
    "check_linear",
    "check_linear_residual_layernorm",
    "choice_key",
    "default_table_path",
    "epilogue_name",
    "launch_linear",
    "launch_linear_residual_layernorm",
    "linear",
    "linear_residual_layernorm",
    "load_choice_table",
    "measure_choices",
    "parse_epilogue",
    "select",
    "set_choice_table",
    "write_table",
]


# --------------------------------------------------------------------------------------------------
# Selecting an implementation
# --------------------------------------------------------------------------------------------------


def _refusal(choice: str, x: torch.Tensor, weight: torch.Tensor, state: LaunchState) -> Exception:
    """The one error for a choice that cannot run: its own reasons decide the type, every
    implementation's reasons are listed."""
    lines, mine = [], []
    for name, impl in IMPLEMENTATIONS.items():
        reasons = impl.not_supported_reasons(x, weight, state)
        mine = reasons if name == choice else mine
        lines.append(f"  {name}: " + ("; ".join(reasons) if reasons else "supported"))
    error = mine[0].error if mine else ValueError
    return error(f"choice={choice!r} cannot run this call:\n" + "\n".join(lines))


def _first_supported(x, weight, state: LaunchState) -> GemmImpl:
    for name in PRIORITY:
        impl = IMPLEMENTATIONS[name]
        if not impl.not_supported_reasons(x, weight, state):
            return impl
    raise _refusal(PRIORITY[0], x, weight, state)


def _preferred(state: LaunchState, key: tuple) -> Optional[GemmImpl]:
    """The table's (or the default) implementation for a key, when the key alone does not rule it out."""
    impl = IMPLEMENTATIONS[state.gemm_choice(key) or DEFAULT]
    return None if impl.key_reasons(key[0], _dtypes.parse_dtype(key[4]), state) else impl


def select(x: torch.Tensor, weight: torch.Tensor, key: tuple, choice: Optional[str] = None) -> GemmImpl:
    """The implementation that runs a call with this choice key; `choice` forces one of CHOICES, which
    must support the call (else one TypeError / ValueError listing every implementation's reasons)."""
    state = launch_state(x.device)
    if choice is not None:
        if choice not in IMPLEMENTATIONS:
            raise ValueError(f"choice must be None or one of {CHOICES}, got {choice!r}")
        impl = IMPLEMENTATIONS[choice]
        if impl.not_supported_reasons(x, weight, state):
            raise _refusal(choice, x, weight, state)
        return impl
    impl = state.memo("gemm_choice", key, lambda k: _preferred(state, k))
    if impl is None or impl.reads_layout and impl.layout_reasons(x, weight):
        impl = _first_supported(x, weight, state)
    return impl


# --------------------------------------------------------------------------------------------------
# linear
# --------------------------------------------------------------------------------------------------


def check_linear(x, weight, bias, activation, residual, out) -> torch.Tensor:
    """linear()'s boundary checks; returns out (allocated when None)."""
    out, _ = gemm.check_linear_args(x, weight, bias, activation, residual, out, None, gemm._linear_fwd_kernel)
    return out


def launch_linear(x, weight, bias, kernel_activation: str, residual, out=None, *, choice=None) -> torch.Tensor:
    """linear() on checked operands: x [M, K] (M >= 1), weight [N, K], bias [N] or None, residual
    [M, N] or None, one float dtype and device, `kernel_activation` a kernel name ("" for none)."""
    M, N = x.shape[0], weight.shape[0]
    epilogue = epilogue_name(bias is not None, kernel_activation, residual is not None)
    impl = select(x, weight, choice_key(M, N, x.shape[1], epilogue, x.dtype), choice)
    if out is None:
        out = torch.empty((M, N), dtype=x.dtype, device=x.device)
    impl.launch(x, weight, bias, kernel_activation, residual, out, _utils.check_input_precision(None, x.dtype))
    return out


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    activation: Optional[str] = None,
    residual: Optional[torch.Tensor] = None,
    *,
    out: Optional[torch.Tensor] = None,
    choice: Optional[str] = None,
) -> torch.Tensor:
    """out [M, N] = activation(x [M, K] @ weight [N, K]^T + bias [N]) + residual [M, N], by the fastest
    measured implementation for the shape (see the module docstring); `choice` forces one of CHOICES.

    One float dtype for every operand; x, weight, residual any strides; fp32 runs IEEE fp32 everywhere.
    """
    out = check_linear(x, weight, bias, activation, residual, out)
    if choice is not None and choice not in IMPLEMENTATIONS:
        raise ValueError(f"choice must be None or one of {CHOICES}, got {choice!r}")
    if x.shape[0] == 0:
        return out
    return launch_linear(x, weight, bias, _act.kernel_name(activation), residual, out, choice=choice)


# --------------------------------------------------------------------------------------------------
# linear + residual + LayerNorm
# --------------------------------------------------------------------------------------------------


def check_linear_residual_layernorm(x, weight, bias, residual, ln_weight, ln_bias, eps, out) -> tuple:
    """linear_residual_layernorm()'s boundary checks; returns (out allocated when None, eps)."""
    if residual is None:
        raise ValueError("residual must be a tensor [M, N] (this is the residual + LayerNorm block)")
    out = check_linear(x, weight, bias, None, residual, out)
    N = weight.shape[0]
    for name, v in (("ln_weight", ln_weight), ("ln_bias", ln_bias)):
        _utils.check_tensor(name, v, ndim=1)
        _utils.check_shape(name, v, (N,))
    _utils.check_same_dtype("x", x, ln_weight=ln_weight, ln_bias=ln_bias)
    return out, _utils.check_eps(eps)


def launch_linear_residual_layernorm(
    x, weight, bias, residual, ln_weight, ln_bias, eps: float, out=None, *, choice=None
) -> torch.Tensor:
    """linear_residual_layernorm() on checked operands (launch_linear's contract; M >= 1)."""
    M, N = x.shape[0], weight.shape[0]
    epilogue = epilogue_name(bias is not None, "", True, True)
    impl = select(x, weight, choice_key(M, N, x.shape[1], epilogue, x.dtype), choice)
    y = torch.empty((M, N), dtype=x.dtype, device=x.device)  # the GEMM's output, before the row pass
    if out is None:
        out = torch.empty_like(y)
    precision = _utils.check_input_precision(None, x.dtype)
    impl.launch_residual_layernorm(x, weight, bias, residual, ln_weight, ln_bias, eps, y, out, precision)
    return out


def linear_residual_layernorm(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    residual: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
    *,
    out: Optional[torch.Tensor] = None,
    choice: Optional[str] = None,
) -> torch.Tensor:
    """out [M, N] = LayerNorm(x [M, K] @ weight [N, K]^T + bias [N] + residual [M, N]) * ln_weight + ln_bias.

    "cublas": torch.mm, then bias + residual + LayerNorm in one row pass (fp32 statistics);
    "triton" / "splitk" / "tma": the GEMM with bias + residual fused, then the LayerNorm pass.
    """
    out, eps = check_linear_residual_layernorm(x, weight, bias, residual, ln_weight, ln_bias, eps, out)
    if choice is not None and choice not in IMPLEMENTATIONS:
        raise ValueError(f"choice must be None or one of {CHOICES}, got {choice!r}")
    if x.shape[0] == 0:
        return out
    return launch_linear_residual_layernorm(x, weight, bias, residual, ln_weight, ln_bias, eps, out, choice=choice)


# --------------------------------------------------------------------------------------------------
# Measuring: what `bertfast tune` runs on a GPU to write tables/<gpu-slug>.json
# --------------------------------------------------------------------------------------------------

L2_FLUSH_BYTES = 128 * 2**20  # operand sets rotated per timing so a small GEMM reads HBM, not L2 (H100: 50 MB)


def candidates(x: torch.Tensor, weight: torch.Tensor) -> list[str]:
    """The choices that can run these operands on their device, to be timed: every implementation
    with no `not_supported_reasons`."""
    state = launch_state(x.device)
    return [name for name, impl in IMPLEMENTATIONS.items() if not impl.not_supported_reasons(x, weight, state)]


def _operand_sets(M, N, K, parts, dtype, device, copies, generator):
    def rand(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=generator, dtype=torch.float32)).to(device=device, dtype=dtype)

    sets = []
    for _ in range(copies):
        sets.append(
            {
                "x": rand(M, K),
                "weight": rand(N, K, scale=K**-0.5),
                "bias": rand(N, scale=0.5) if parts["bias"] else None,
                "residual": rand(M, N) if parts["residual"] else None,
                "ln_weight": 1.0 + rand(N, scale=0.1) if parts["layernorm"] else None,
                "ln_bias": rand(N, scale=0.1) if parts["layernorm"] else None,
            }
        )
    return sets


def _call(choice, ops, parts, eps=1e-12):
    if parts["layernorm"]:
        return linear_residual_layernorm(
            ops["x"], ops["weight"], ops["bias"], ops["residual"], ops["ln_weight"], ops["ln_bias"], eps, choice=choice
        )
    act = parts["activation"]
    return linear(ops["x"], ops["weight"], ops["bias"], act, ops["residual"], choice=choice)


def _reference(ops, parts, eps=1e-12) -> torch.Tensor:
    """fp32 torch math of the same function (the check that a candidate is correct before it is timed)."""
    f = torch.float32
    y = ops["x"].to(f) @ ops["weight"].to(f).t()
    if ops["bias"] is not None:
        y = y + ops["bias"].to(f)
    if parts["activation"]:
        y = _act.apply(y, parts["activation"])
    if ops["residual"] is not None:
        y = y + ops["residual"].to(f)
    if parts["layernorm"]:
        y = torch.nn.functional.layer_norm(y, (y.shape[-1],), ops["ln_weight"].to(f), ops["ln_bias"].to(f), eps)
    return y


def measure_choices(
    shapes: Iterable[tuple[int, int, int, str]],
    dtype: torch.dtype,
    device: str | torch.device = "cuda",
    reps: int = 100,
) -> list[dict]:
    """Time every candidate for each (M, N, K, epilogue) shape; returns one table row per shape.

    A candidate is first checked against fp32 torch math on the same inputs (`_utils.acceptable_error`
    with the cuBLAS candidate's error as PyTorch's own); a wrong one gets no time and can never win.
    Operand sets rotate so that the weights come from device memory as they do inside a model.
    Row fields: see tables/README.md.
    """
    device = torch.device(device)
    g = torch.Generator().manual_seed(0)
    rows = []
    for M, N, K, epi in shapes:
        parts = parse_epilogue(epi)
        set_bytes = (M * K + N * K + (M * N if parts["residual"] else 0)) * torch.tensor([], dtype=dtype).element_size()
        copies = max(1, min(32, math.ceil(L2_FLUSH_BYTES / max(set_bytes, 1)))) if device.type == "cuda" else 1
        sets = _operand_sets(M, N, K, parts, dtype, device, copies, g)
        ref = _reference(sets[0], parts)
        ms: dict[str, Optional[float]] = {}
        errors: dict[str, float] = {}
        runnable = candidates(sets[0]["x"], sets[0]["weight"])
        for choice in CHOICES:
            if choice in runnable:
                errors[choice] = (_call(choice, sets[0], parts).float() - ref).abs().max().item()
            else:
                ms[choice], errors[choice] = None, float("nan")
        for choice, err in errors.items():
            if choice in ms:
                continue
            if not _utils.acceptable_error(err, errors["cublas"], dtype):
                ms[choice] = None
                warnings.warn(
                    f"measure_choices: {choice} is wrong at M={M} N={N} K={K} {epi} (max error {err:.3e} against "
                    f"cuBLAS's {errors['cublas']:.3e}): not timed",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue

            def run(i, c=choice, s=sets, p=parts):
                return _call(c, s[i], p)

            ms[choice] = round(_utils.median_ms(run, copies, reps, device), 6)
        timed = sorted((t, c) for c, t in ms.items() if t is not None)
        best_ms, best = timed[0]
        margin = round(timed[1][0] / best_ms - 1.0, 4) if len(timed) > 1 else None
        max_error = {c: (None if math.isnan(e) else float(f"{e:.3e}")) for c, e in errors.items()}
        rows.append(
            {
                "m": M,
                "m_bucket": _utils.bucket(M),
                "n": N,
                "k": K,
                "epilogue": epi,
                "dtype": _dtypes.dtype_name(dtype),
                "ms": ms,
                "choice": best,
                "margin": margin,
                "max_error": max_error,
            }
        )
    return rows
