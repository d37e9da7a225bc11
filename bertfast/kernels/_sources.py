"""Which source files each kernel's configs depend on, and the one hash over them.

A tuned or committed config stays valid while the sources it was measured on are unchanged: each
entry below names the files whose `@triton.jit` code (or launch logic) decides what the config means.
Editing one kernel's file invalidates that kernel's configs only, never every other kernel's.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

KERNEL_DIR = Path(__file__).resolve().parent

# kernel name (as in config files and `LaunchState.config`) -> the files its configs depend on.
KERNEL_SOURCES: dict[str, tuple[str, ...]] = {
    "triton_linear": ("gemm.py", "epilogue.py"),
    "linear_splitk": ("gemm_splitk.py", "gemm.py", "epilogue.py"),
    "linear_tma": ("gemm_tma.py", "gemm.py", "epilogue.py"),
    "varlen_attention": ("attention.py",),
    "layernorm": ("layernorm.py", "_norm.py"),
    "bias_activation": ("epilogue.py",),
    "embed_layernorm": ("embed_layernorm.py", "_norm.py"),
    # The GEMM choice table compares whole implementations: cuBLAS + the epilogue and LayerNorm row
    # passes against the three Triton GEMMs.
    "gemm_choice": ("gemm.py", "gemm_splitk.py", "gemm_tma.py", "epilogue.py", "layernorm.py", "_norm.py"),
}


def kernel_hash(kernel: str, directory: str | os.PathLike | None = None) -> str:
    """16 hex digits over the sources `kernel` depends on (KERNEL_SOURCES), read from `directory`
    (the installed kernels by default)."""
    try:
        files = KERNEL_SOURCES[kernel]
    except KeyError:
        raise ValueError(f"kernel must be one of {sorted(KERNEL_SOURCES)}, got {kernel!r}") from None
    root = Path(directory) if directory is not None else KERNEL_DIR
    h = hashlib.sha256()
    for name in files:
        h.update(name.encode())
        h.update((root / name).read_bytes())
    return h.hexdigest()[:16]
