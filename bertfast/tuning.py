"""Kernel configs that outlive the process: what `bertfast tune` writes and the table script measures.

Launchers never autotune at call time: each asks its device's launch state
(`bertfast.kernels.state.launch_state(device).config(kernel, key, heuristic)`), which answers from known
configs, else from the kernel's deterministic heuristic. The state loads, once per CUDA device, the
committed file for the GPU (bertfast/kernels/tables/configs-<gpu>.json), then the user's tuned file
(`~/.cache/bertfast/tuned-<gpu>.json`, format in bertfast.kernels.config_file). This module

- copies a state's known configs into such a file (`harvest`, what `bertfast tune` saves), and
- times a short candidate list per kernel and shape and keeps the fastest correct one
  (`measure_configs`, what scripts/gpu_tables.py commits), in the same file format.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # the kernels import triton: only when a function here runs
    from .kernels.config_file import TunedConfigCache
    from .kernels.state import LaunchState


def harvest(cache: TunedConfigCache, state: LaunchState) -> int:
    """Copy every known config of `state` into `cache`; returns how many entries were copied."""
    count = 0
    for kernel, known in state.known_configs().items():
        for key, config in known.items():
            cache.put(kernel, key, config)
            count += 1
    return count


def measure_configs(
    device: str | torch.device,
    kernel_shapes: dict[str, Iterable[tuple]],
    reps: int = 50,
    *,
    dtypes: Iterable[torch.dtype | str] = (torch.float16,),
    path: str | os.PathLike | None = None,
    device_name: str | None = None,
) -> dict[str, Any]:
    """Time each kernel's short candidate list per shape on `device` and keep the fastest correct one.

    kernel_shapes: {"gemm": [(M, N, K, epilogue name)], "attention": [(seq_len, head_dim)]} (either
    may be missing); the GEMM shapes also give the row kernels the GEMM choices run (the bias +
    activation pass, the residual LayerNorm) and the embedding LayerNorm at each hidden size.
    A candidate is timed only when its error against the fp32 reference passes the acceptance rule
    (`kernels._utils.acceptable_error`) with the heuristic config's error as the bar.
    Returns the config-file object (header + kernels, see kernels.config_file) and writes it to
    `path` when given. On CPU tensors under the interpreter it runs with host-clock timings, which
    exercise the code and mean nothing as figures.
    """
    from .kernels import tuning_runs  # imports triton and every kernel

    device = torch.device(device)
    cache = tuning_runs.measure(device, kernel_shapes, reps, dtypes, device_name)
    if path is not None:
        write_configs(cache, path)
    return cache.as_dict()


def write_configs(cache: TunedConfigCache, path: str | os.PathLike) -> str:
    """Write a config file (from measure_configs' cache) at `path`, atomically; returns the path."""
    return str(cache.save_as(path))


def tuned_file(device: str | torch.device) -> TunedConfigCache:
    """The user's tuned-config file of a CUDA device, loaded (empty when missing or stale)."""
    from .kernels.state import device_config_file

    cache = device_config_file(device)
    cache.load()
    return cache


def save_tuned(device: str | torch.device) -> str:
    """Merge the device's known configs into the user's tuned file and write it; returns its path."""
    from .kernels.state import launch_state

    cache = tuned_file(device)
    harvest(cache, launch_state(device))
    return str(cache.save())
