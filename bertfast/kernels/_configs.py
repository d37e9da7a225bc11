"""Launch configs as plain dicts: a kernel's constexpr block sizes plus "num_warps" and "num_stages".

Where a config comes from (a committed or tuned file, else the kernel's heuristic) is the launch
state's business (kernels/state.py); this module only converts between forms.
"""

from __future__ import annotations

from typing import Any

Config = dict[str, Any]


def split_launch(config: Config) -> tuple[dict, dict]:
    """(constexpr kwargs, launch kwargs) of a config dict: num_warps / num_stages go to the launch."""
    meta = dict(config)
    launch = {"num_warps": meta.pop("num_warps", 4), "num_stages": meta.pop("num_stages", 3)}
    return meta, launch


def from_triton(config) -> Config:
    """A triton.Config (an autotuner's winner) as a plain dict."""
    return {**config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages}
