"""One parser for the weight dtypes the package accepts by name (CLI flags, bench, tune).

A leaf module: imports torch only, so every layer (cli, bench, runtime) may use it.
"""

from __future__ import annotations

import torch

# Every spelling accepted anywhere in bertfast, and the dtype it means.
DTYPE_ALIASES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}
DTYPE_NAMES: tuple[str, ...] = tuple(DTYPE_ALIASES)
_SUPPORTED = (torch.float32, torch.float16, torch.bfloat16)
_NAMES = {d: str(d).removeprefix("torch.") for d in _SUPPORTED}


def parse_dtype(name: str | torch.dtype, *, arg: str = "dtype") -> torch.dtype:
    """torch.float32 / float16 / bfloat16 from a name in DTYPE_NAMES (any case, a 'torch.' prefix
    allowed) or from the torch.dtype itself. `arg` names the argument in the error message."""
    if isinstance(name, torch.dtype):
        if name not in _SUPPORTED:
            raise ValueError(f"{arg} must be one of float32, float16, bfloat16, got {name}")
        return name
    if not isinstance(name, str):
        raise TypeError(f"{arg} must be a str or a torch.dtype, got {type(name).__name__}")
    key = name.strip().lower().removeprefix("torch.")
    if key not in DTYPE_ALIASES:
        raise ValueError(f"{arg} must be one of {', '.join(DTYPE_NAMES)}, got {name!r}")
    return DTYPE_ALIASES[key]


def dtype_name(dtype: torch.dtype) -> str:
    """The canonical short name: 'float32', 'float16' or 'bfloat16' (one dict lookup: launchers key on it)."""
    name = _NAMES.get(dtype)
    return name if name is not None else _NAMES[parse_dtype(dtype)]
