"""The fastest correct GEMM per shape: cuBLAS + a fused epilogue, the Triton GEMM, split-K, or Hopper TMA.

    linear(x [M, K], weight [N, K], bias, activation, residual) -> out [M, N]
        "cublas": torch.mm / torch.addmm, then one epilogue pass (epilogue.bias_activation) when an
                  activation is asked for (always the exact erf GELU for "gelu": never cuBLASLt's tanh
                  epilogue), or an in-place residual add
        "triton": gemm.linear, everything fused in the GEMM
        "splitk": gemm_splitk.linear_splitk (few rows: the weight read spread over every SM)
        "tma":    gemm_tma.linear_tma (Hopper; fp16 / bf16, 16-byte aligned rows)
    linear_residual_layernorm(...) -> LayerNorm(x @ W^T + bias + residual): "cublas" is the mm then
        layernorm.bias_residual_layernorm (one row pass); the others fuse bias + residual in the GEMM,
        then layernorm.layernorm.

Which one runs is decided per key (M bucket, N, K, epilogue, dtype name):
  1. the committed table for this GPU, tables/<gpu-slug>.json (format in tables/README.md), measured by
     `measure_choices` and written by `write_table`; valid only for the same GPU, triton version and
     GEMM kernel sources (anything else is ignored, with the reason kept in `table.invalid_reason`);
  2. else the heuristic: "cublas". It is what is measured (shared/GPU-BASELINE.md: cuBLAS beat the
     Triton GEMM at every measured BERT shape on an H100); split-K and TMA run only where a table says.
The answer is memoised per key: a hot call costs one dict lookup.

Under the Triton interpreter (CPU tensors) every choice runs too ("cublas" is torch.mm on the CPU), so
the tests check that all of them compute the same function.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import importlib
import json
import math
import os
import statistics
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Optional

import torch
import triton

from .. import activations as _act
from . import _utils, epilogue, gemm, gemm_splitk, gemm_tma

# The module, not the function kernels/__init__ exports under the same name.
_layernorm = importlib.import_module(".layernorm", __package__)

CHOICES = ("cublas", "triton", "splitk", "tma")
SPLITK_MAX_M = 256  # split-K is measured (and offered by measure_choices) only up to this many rows
TABLE_FORMAT = "bertfast-gemm-choices/1"
TABLE_DIR = Path(__file__).resolve().parent / "tables"
_KERNEL_FILES = ("gemm.py", "gemm_splitk.py", "gemm_tma.py", "epilogue.py")
_EPILOGUE_PARTS = ("bias", *sorted({a.kernel for a in _act.ACTIVATIONS.values()}), "residual", "layernorm")


# --------------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------------


def epilogue_name(has_bias: bool, kernel_activation: str, has_residual: bool, layernorm: bool = False) -> str:
    """ "bias+gelu", "bias+residual+layernorm", "none", ...: the epilogue part of a choice key."""
    parts = (
        "bias" if has_bias else "",
        kernel_activation,
        "residual" if has_residual else "",
        "layernorm" if layernorm else "",
    )
    return "+".join(p for p in parts if p) or "none"


def parse_epilogue(name: str) -> dict:
    """Inverse of epilogue_name: {"bias", "activation" (kernel name or None), "residual", "layernorm"}."""
    parts = [] if name == "none" else name.split("+")
    unknown = [p for p in parts if p not in _EPILOGUE_PARTS]
    if unknown or not parts and name != "none":
        raise ValueError(f"epilogue must be 'none' or '+'-joined parts of {_EPILOGUE_PARTS}, got {name!r}")
    acts = [p for p in parts if p not in ("bias", "residual", "layernorm")]
    if len(acts) > 1 or "layernorm" in parts and "residual" not in parts:
        raise ValueError(f"epilogue {name!r}: at most one activation; layernorm comes with a residual")
    return {
        "bias": "bias" in parts,
        "activation": acts[0] if acts else None,
        "residual": "residual" in parts,
        "layernorm": "layernorm" in parts,
    }


def choice_key(M: int, N: int, K: int, epilogue_: str, dtype: torch.dtype) -> tuple:
    return (_utils.bucket(M), N, K, epilogue_, gemm.dtype_name(dtype))


# --------------------------------------------------------------------------------------------------
# The choice table
# --------------------------------------------------------------------------------------------------


def heuristic_choice(key: tuple) -> str:
    """Where no table measured the shape: cuBLAS + the fused epilogue (the measured winner on H100)."""
    return "cublas"


class ChoiceTable:
    """Measured choices per key (from a table file) with the heuristic for every other key; memoised."""

    def __init__(
        self,
        rows: Iterable[dict] = (),
        *,
        header: Optional[dict] = None,
        path: Optional[Path] = None,
        invalid_reason: Optional[str] = None,
    ):
        self.header = header
        self.path = path
        self.invalid_reason = invalid_reason
        self.rows = [dict(r) for r in rows]
        self._known = {_row_key(r): r["choice"] for r in self.rows}
        self._memo: dict[tuple, str] = {}
        self._lock = threading.Lock()
        self.heuristic: Callable[[tuple], str] = heuristic_choice

    def lookup(self, key: tuple) -> str:
        choice = self._memo.get(key)
        if choice is None:
            choice = self._known.get(key) or self.heuristic(key)
            with self._lock:
                self._memo[key] = choice
        return choice

    def source(self, key: tuple) -> str:
        """ "table" when a measured row decides the key, else "heuristic"."""
        return "table" if key in self._known else "heuristic"


def _row_key(row: dict) -> tuple:
    return (row["m_bucket"], row["n"], row["k"], row["epilogue"], row["dtype"])


def kernels_hash() -> str:
    """Hash of the GEMM family's kernel sources: an edited kernel makes measured tables stale."""
    h = hashlib.sha256()
    for name in _KERNEL_FILES:
        h.update(name.encode())
        h.update((Path(__file__).resolve().parent / name).read_bytes())
    return h.hexdigest()[:16]


def _check_row(row: Any, i: int) -> None:
    """Raise ValueError naming row i and the field when a table row is malformed."""
    if not isinstance(row, dict):
        raise ValueError(f"rows[{i}] is not an object")
    for field, kind in (
        ("m_bucket", int),
        ("n", int),
        ("k", int),
        ("epilogue", str),
        ("dtype", str),
        ("choice", str),
        ("ms", dict),
    ):
        if not isinstance(row.get(field), kind) or isinstance(row.get(field), bool):
            raise ValueError(f"rows[{i}].{field} must be {kind.__name__}, got {row.get(field)!r}")
    if row["m_bucket"] != _utils.bucket(row["m_bucket"]):
        raise ValueError(f"rows[{i}].m_bucket must be a power of two >= 16, got {row['m_bucket']}")
    if row["dtype"] not in ("float16", "bfloat16", "float32"):
        raise ValueError(f"rows[{i}].dtype must be float16, bfloat16 or float32, got {row['dtype']!r}")
    parse_epilogue(row["epilogue"])
    if row["choice"] not in CHOICES:
        raise ValueError(f"rows[{i}].choice must be one of {CHOICES}, got {row['choice']!r}")
    for name, ms in row["ms"].items():
        if name not in CHOICES or not (ms is None or isinstance(ms, (int, float)) and ms > 0):
            raise ValueError(f"rows[{i}].ms[{name!r}] must name a choice and hold a positive time or null, got {ms!r}")
    if not isinstance(row["ms"].get(row["choice"]), (int, float)):
        raise ValueError(f"rows[{i}]: the choice {row['choice']!r} has no measured time")


def load_choice_table(path: str | os.PathLike, device_name: str) -> ChoiceTable:
    """The table at `path` if it was measured on `device_name` with this triton and these kernels.

    Never raises for a bad file: a missing, stale or other-GPU file gives an empty table (heuristics
    everywhere) with `invalid_reason` saying why; a malformed one does too and also warns, since a
    committed table that does not parse is a bug to fix.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return ChoiceTable(path=path, invalid_reason=f"no table for {device_name!r} ({path})")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return _malformed(path, f"unreadable: {e}")
    if not isinstance(data, dict) or not isinstance(data.get("header"), dict) or not isinstance(data.get("rows"), list):
        return _malformed(path, "expected an object with a 'header' object and a 'rows' list")
    header = data["header"]
    if header.get("format") != TABLE_FORMAT:
        return _malformed(path, f"header.format is {header.get('format')!r}, expected {TABLE_FORMAT!r}")
    try:
        for i, row in enumerate(data["rows"]):
            _check_row(row, i)
    except ValueError as e:
        return _malformed(path, str(e))
    stale = []
    if header.get("device") != device_name:
        stale.append(f"measured on {header.get('device')!r}, running on {device_name!r}")
    if header.get("triton") != triton.__version__:
        stale.append(f"measured with triton {header.get('triton')}, running {triton.__version__}")
    if header.get("kernels") != kernels_hash():
        stale.append("the GEMM kernel sources changed since it was measured")
    if stale:
        return ChoiceTable(header=header, path=path, invalid_reason=f"ignored {path}: " + "; ".join(stale))
    return ChoiceTable(data["rows"], header=header, path=path)


def _malformed(path: Path, why: str) -> ChoiceTable:
    reason = f"malformed GEMM choice table {path}: {why}"
    warnings.warn(reason + " (ignored: heuristics are used instead)", RuntimeWarning, stacklevel=3)
    return ChoiceTable(path=path, invalid_reason=reason)


_TABLES: dict[Any, ChoiceTable] = {}
_TABLES_LOCK = threading.Lock()


def table_for(device: torch.device) -> ChoiceTable:
    """The choice table of a device (loaded once per process): tables/<gpu-slug>.json for a CUDA
    device, an empty table (the heuristic) for CPU tensors."""
    slot = device.index if device.type == "cuda" else device.type
    if device.type == "cuda" and slot is None:
        slot = torch.cuda.current_device()
    table = _TABLES.get(slot)
    if table is None:
        with _TABLES_LOCK:
            table = _TABLES.get(slot)
            if table is None:
                if device.type == "cuda":
                    name = torch.cuda.get_device_name(slot)
                    table = load_choice_table(TABLE_DIR / f"{_utils.gpu_slug(name)}.json", name)
                else:
                    table = ChoiceTable(invalid_reason=f"no tables for {device.type} tensors")
                _TABLES[slot] = table
    return table


def set_choice_table(device: torch.device, table: Optional[ChoiceTable]) -> None:
    """Install `table` for `device` (e.g. one measured just now); None forgets it (reloaded on next use)."""
    slot = device.index if device.type == "cuda" else device.type
    if device.type == "cuda" and slot is None:
        slot = torch.cuda.current_device()
    with _TABLES_LOCK:
        if table is None:
            _TABLES.pop(slot, None)
        else:
            _TABLES[slot] = table


# --------------------------------------------------------------------------------------------------
# Running a choice
# --------------------------------------------------------------------------------------------------


def _runnable(choice: str, x: torch.Tensor, weight: torch.Tensor) -> Optional[str]:
    """Why `choice` cannot run these operands (None when it can)."""
    if choice == "tma":
        return gemm_tma.tma_incompatibility(x, weight)
    return None


def _cublas(x, weight, bias, kernel_activation, residual, out) -> None:
    # cuBLAS adds the bias in its fp32 epilogue (addmm); the activation (+ residual) is one more pass.
    if bias is not None:
        torch.addmm(bias, x, weight.t(), out=out)
    else:
        torch.mm(x, weight.t(), out=out)
    if kernel_activation:
        epilogue._launch_bias_activation(out, None, kernel_activation, residual, out)
    elif residual is not None:
        out.add_(residual)


def _run(choice, x, weight, bias, kernel_activation, residual, out, precision) -> None:
    if choice == "cublas":
        _cublas(x, weight, bias, kernel_activation, residual, out)
    elif choice == "triton":
        gemm.launch_linear(x, weight, bias, kernel_activation, residual, out, precision)
    elif choice == "splitk":
        gemm_splitk.launch_linear_splitk(x, weight, bias, kernel_activation, residual, out, precision)
    else:
        gemm_tma.launch_linear_tma(x, weight, bias, kernel_activation, residual, out)


def _resolve(choice: Optional[str], key: tuple, x, weight) -> str:
    """An explicit choice must run here (else ValueError / TypeError); a table's falls back to "triton"."""
    if choice is None:
        choice = table_for(x.device).lookup(key)
        return "triton" if _runnable(choice, x, weight) else choice
    if choice not in CHOICES:
        raise ValueError(f"choice must be None or one of {CHOICES}, got {choice!r}")
    reason = _runnable(choice, x, weight)
    if reason is not None:
        raise (TypeError if "dtype" in reason else ValueError)(f"choice={choice!r}: {reason}")
    return choice


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

    Operands as for kernels.linear (one float dtype; x, weight, residual any strides; fp32 runs IEEE
    fp32 everywhere). A table's "tma" for operands TMA cannot read runs "triton" instead.
    """
    out, precision = gemm.check_linear_args(x, weight, bias, activation, residual, out, None, gemm._linear_fwd_kernel)
    kact = _act.kernel_name(activation)
    key = choice_key(
        x.shape[0], weight.shape[0], x.shape[1], _epilogue(bias is not None, kact, residual is not None, False), x.dtype
    )
    choice = _resolve(choice, key, x, weight)
    if x.shape[0] == 0:
        return out
    _run(choice, x, weight, bias, kact, residual, out, precision)
    return out


def _fused_bias_residual_layernorm():
    """layernorm.bias_residual_layernorm when that module provides it (None otherwise)."""
    return getattr(_layernorm, "bias_residual_layernorm", None)


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
    if residual is None:
        raise ValueError("residual must be a tensor [M, N] (this is the residual + LayerNorm block)")
    y, precision = gemm.check_linear_args(x, weight, bias, None, residual, None, None, gemm._linear_fwd_kernel)
    N = weight.shape[0]
    for name, v in (("ln_weight", ln_weight), ("ln_bias", ln_bias)):
        _utils.check_tensor(name, v, ndim=1)
        _utils.check_shape(name, v, (N,))
    _utils.check_same_dtype("x", x, ln_weight=ln_weight, ln_bias=ln_bias)
    eps = _utils.check_eps(eps)
    key = choice_key(x.shape[0], N, x.shape[1], _epilogue(bias is not None, "", True, True), x.dtype)
    choice = _resolve(choice, key, x, weight)
    if choice == "cublas":
        fused = _fused_bias_residual_layernorm()
        if fused is not None:
            if x.shape[0] > 0:
                torch.mm(x, weight.t(), out=y)  # y [M, N], bias-free: the row pass adds it
            return fused(y, bias, residual, ln_weight, ln_bias, eps, out=out)
        # Without the fused row pass: cuBLAS adds the bias, the LayerNorm pass adds the residual.
        if x.shape[0] > 0:
            _cublas(x, weight, bias, "", None, y)
        return _layernorm.layernorm(y, ln_weight, ln_bias, eps, residual=residual, out=out)
    if x.shape[0] > 0:
        _run(choice, x, weight, bias, "", residual, y, precision)  # y = x @ W^T + bias + residual
    return _layernorm.layernorm(y, ln_weight, ln_bias, eps, out=out)


# --------------------------------------------------------------------------------------------------
# The model's hot path: operands the caller has validated once, at its boundary
# --------------------------------------------------------------------------------------------------


@functools.cache
def _epilogue(has_bias: bool, kernel_activation: str, has_residual: bool, layernorm: bool) -> str:
    """epilogue_name, memoised for the hot path."""
    return epilogue_name(has_bias, kernel_activation, has_residual, layernorm)


def _choose(x: torch.Tensor, weight: torch.Tensor, epi: str) -> str:
    choice = table_for(x.device).lookup(choice_key(x.shape[0], weight.shape[0], x.shape[1], epi, x.dtype))
    return "triton" if choice == "tma" and _runnable(choice, x, weight) else choice


def linear_trusted(x, weight, bias, activation, residual) -> torch.Tensor:
    """linear() without its checks, for the model's own forward: x [M, K] (M >= 1), weight [N, K],
    bias [N] or None, residual [M, N] or None, one float dtype, one device, a canonical activation
    name or None; all guaranteed by the caller (bertfast.inputs validates a call once, at the model's
    boundary; the rest are the model's own parameters). Same choice and numbers as linear()."""
    kact = _act.kernel_name(activation)
    choice = _choose(x, weight, _epilogue(bias is not None, kact, residual is not None, False))
    out = torch.empty((x.shape[0], weight.shape[0]), dtype=x.dtype, device=x.device)
    _run(choice, x, weight, bias, kact, residual, out, "ieee" if x.dtype == torch.float32 else "tf32")
    return out


def linear_residual_layernorm_trusted(x, weight, bias, residual, ln_weight, ln_bias, eps: float) -> torch.Tensor:
    """linear_residual_layernorm() without its checks, under linear_trusted's contract."""
    choice = _choose(x, weight, _epilogue(bias is not None, "", True, True))
    M, N = x.shape[0], weight.shape[0]
    y = torch.empty((M, N), dtype=x.dtype, device=x.device)
    out = torch.empty_like(y)
    if choice == "cublas":
        torch.mm(x, weight.t(), out=y)  # y [M, N], bias-free: the row pass adds bias and residual
        return _layernorm._launch(y, bias, residual, ln_weight, ln_bias, eps, out)
    _run(choice, x, weight, bias, "", residual, y, "ieee" if x.dtype == torch.float32 else "tf32")
    return _layernorm._launch(y, None, None, ln_weight, ln_bias, eps, out)


# --------------------------------------------------------------------------------------------------
# Measuring: what `bertfast tune` runs on a GPU to write tables/<gpu-slug>.json
# --------------------------------------------------------------------------------------------------

L2_FLUSH_BYTES = 128 * 2**20  # operand sets rotated per timing so a small GEMM reads HBM, not L2 (H100: 50 MB)


def candidates(M: int, dtype: torch.dtype, device: torch.device) -> list[str]:
    """The choices worth timing for a shape on a device."""
    out = ["cublas", "triton"]
    if M <= SPLITK_MAX_M:
        out.append("splitk")
    hopper = device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9
    if dtype in gemm_tma.TMA_DTYPES and (hopper or device.type != "cuda"):
        out.append("tma")
    return out


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


def _median_ms(fn_for, copies: int, reps: int, device: torch.device) -> float:
    """Median ms of fn_for(i) over reps calls, operand set i rotating; CUDA events on a GPU, a host
    clock (meaningless as a GPU figure: tests only) on the CPU."""
    for i in range(min(copies, 3)):
        fn_for(i)  # warm-up: compile, autotune-free config resolution, allocator
    samples = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
        for r, (start, end) in enumerate(events):
            start.record()
            fn_for(r % copies)
            end.record()
        torch.cuda.synchronize(device)
        samples = [s.elapsed_time(e) for s, e in events]
    else:
        for r in range(reps):
            t0 = time.perf_counter()
            fn_for(r % copies)
            samples.append(1000.0 * (time.perf_counter() - t0))
    return statistics.median(samples)


def measure_choices(
    shapes: Iterable[tuple[int, int, int, str]],
    dtype: torch.dtype,
    device: str | torch.device = "cuda",
    reps: int = 100,
) -> list[dict]:
    """Time every candidate for each (M, N, K, epilogue) shape; returns one table row per shape.

    A candidate is first checked against fp32 torch math on the same inputs (error at most 2x the
    cuBLAS candidate's + ATOL); a wrong one gets no time and can never win. Operand sets rotate so
    that the weights come from device memory as they do inside a model. Row fields: see tables/README.md.
    """
    device = torch.device(device)
    atol = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}[dtype]
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
        for choice in candidates(M, dtype, device):
            try:
                got = _call(choice, sets[0], parts)
            except (TypeError, ValueError) as e:  # e.g. TMA alignment: not a candidate for this shape
                ms[choice] = None
                errors[choice] = float("nan")
                warnings.warn(
                    f"measure_choices: {choice} cannot run M={M} N={N} K={K} {epi}: {e}", RuntimeWarning, stacklevel=2
                )
                continue
            errors[choice] = (got.float() - ref).abs().max().item()
        bound = 2.0 * errors["cublas"] + atol
        for choice, err in errors.items():
            if choice in ms:
                continue
            if not err <= bound:
                ms[choice] = None
                why = f"max error {err:.3e} > {bound:.3e}"
                warnings.warn(
                    f"measure_choices: {choice} is wrong at M={M} N={N} K={K} {epi} ({why}): not timed",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue

            def run(i, c=choice, s=sets, p=parts):
                return _call(c, s[i], p)

            ms[choice] = round(_median_ms(run, copies, reps, device), 6)
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
                "dtype": gemm.dtype_name(dtype),
                "ms": ms,
                "choice": best,
                "margin": margin,
                "max_error": max_error,
            }
        )
    return rows


def write_table(rows: Iterable[dict], path: str | os.PathLike, *, device_name: Optional[str] = None) -> Path:
    """Write rows (from measure_choices) as a choice table, atomically. The header names the GPU (the
    current CUDA device's unless `device_name` is given), triton and torch versions, the GEMM kernels'
    source hash and the date; rows from several measure_choices calls (dtypes) may be concatenated."""
    rows = [dict(r) for r in rows]
    for i, row in enumerate(rows):
        _check_row(row, i)
    if device_name is None:
        device_name = torch.cuda.get_device_name()
    header = {
        "format": TABLE_FORMAT,
        "device": device_name,
        "triton": triton.__version__,
        "torch": torch.__version__,
        "kernels": kernels_hash(),
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    rows.sort(key=lambda r: (r["dtype"], r["epilogue"], r["n"], r["k"], r["m_bucket"]))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".gemm-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"header": header, "rows": rows}, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
    return path


def default_table_path(device: str | torch.device = "cuda") -> Path:
    """tables/<gpu-slug>.json for a CUDA device: where a measured table is committed."""
    return TABLE_DIR / f"{_utils.gpu_slug(torch.cuda.get_device_name(torch.device(device)))}.json"
