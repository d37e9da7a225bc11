"""The per-GPU GEMM choice table: which GEMM implementation is fastest per shape, as measured on a GPU.

A table file is tables/<gpu-slug>.json (format in tables/README.md), written by `write_table` from
`gemm_dispatch.measure_choices` rows and read by `load_choice_table` when a device's launch state is
created. It is valid only for the same GPU, triton version and GEMM kernel sources
(`_sources.kernel_hash("gemm_choice")`); anything else gives an empty table whose `invalid_reason`
says why. The key of a row: (M bucket, N, K, epilogue name, dtype name).
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Optional

import torch
import triton

from .. import _dtypes
from .. import activations as _act
from . import _utils
from ._sources import kernel_hash

CHOICES = ("cublas", "triton", "splitk", "tma")
TABLE_FORMAT = "bertfast-gemm-choices/1"
TABLE_DIR = Path(__file__).resolve().parent / "tables"
_EPILOGUE_PARTS = ("bias", *sorted({a.kernel for a in _act.ACTIVATIONS.values()}), "residual", "layernorm")


@functools.cache  # the model's hot path names its epilogue on every GEMM call
def epilogue_name(has_bias: bool, kernel_activation: str, has_residual: bool, layernorm: bool = False) -> str:
    """ "bias+gelu", "bias+residual+layernorm", "none", ...: what a GEMM does after the product."""
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


def choice_key(M: int, N: int, K: int, epilogue: str, dtype: torch.dtype) -> tuple:
    return (_utils.bucket(M), N, K, epilogue, _dtypes.dtype_name(dtype))


class ChoiceTable:
    """Measured choices per key, from a table file (empty: no GPU measured, or the file was invalid).

    `default` names the choice for every key without a row (None: the dispatcher's default), e.g. a
    table that runs every GEMM of a model through one implementation.
    """

    def __init__(
        self,
        rows: Iterable[dict] = (),
        *,
        header: Optional[dict] = None,
        path: Optional[Path] = None,
        invalid_reason: Optional[str] = None,
        default: Optional[str] = None,
    ):
        if default is not None and default not in CHOICES:
            raise ValueError(f"default must be None or one of {CHOICES}, got {default!r}")
        self.header = header
        self.path = path
        self.invalid_reason = invalid_reason
        self.default = default
        self.rows = [dict(r) for r in rows]
        self._known = {_row_key(r): r["choice"] for r in self.rows}

    def choice(self, key: tuple) -> Optional[str]:
        """The measured choice for `key`, else `default`."""
        return self._known.get(key, self.default)

    def source(self, key: tuple) -> str:
        """ "table" when a measured row decides the key, else "default"."""
        return "table" if key in self._known else "default"


def _row_key(row: dict) -> tuple:
    return (row["m_bucket"], row["n"], row["k"], row["epilogue"], row["dtype"])


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
    if header.get("kernels") != kernel_hash("gemm_choice"):
        stale.append("the GEMM kernel sources changed since it was measured")
    if stale:
        return ChoiceTable(header=header, path=path, invalid_reason=f"ignored {path}: " + "; ".join(stale))
    return ChoiceTable(data["rows"], header=header, path=path)


def _malformed(path: Path, why: str) -> ChoiceTable:
    reason = f"malformed GEMM choice table {path}: {why}"
    warnings.warn(reason + " (ignored: heuristics are used instead)", RuntimeWarning, stacklevel=3)
    return ChoiceTable(path=path, invalid_reason=reason)


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
        "kernels": kernel_hash("gemm_choice"),
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
