"""Launch configs without autotuning at call time: known winners first, a deterministic heuristic else.

Each tunable kernel owns one `ConfigTable`. A launcher asks `table.lookup(key, args)` for the config of
a shape key (a tuple of ints / strings / bools that buckets the problem, e.g. (M bucket, N, K, flags)):

    1. a config put there by `put()` (the tuned-config file of `bertfast tune`, or the committed
       per-GPU table shipped in bertfast/kernels/tables/, both loaded by bertfast.tuning), else
    2. the kernel's heuristic `heuristic(key, args)`: deterministic, chosen from the problem size,
       no benchmarking, so a user's first call never waits for autotuning.

The answer is memoised per key, so a hot launch costs one dict lookup. `bertfast tune` runs the
kernel's `triton.autotune` wrapper (Triton's real autotuner) instead and harvests its winners with
`put()`; this module never benchmarks anything itself and imports nothing but the standard library.

A config here is a plain dict: the kernel's constexpr block sizes plus "num_warps" and "num_stages".
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any

Config = dict[str, Any]


class ConfigTable:
    """Known configs per shape key for one kernel, with a heuristic for the keys nobody tuned."""

    def __init__(self, name: str, heuristic: Callable[[tuple, dict], Config]):
        self.name = name
        self.heuristic = heuristic
        self._known: dict[Hashable, Config] = {}
        self._memo: dict[Hashable, Config] = {}
        self._lock = threading.Lock()

    def lookup(self, key: tuple, args: dict | None = None) -> Config:
        """The config for `key` (memoised). `args` feeds the heuristic on a miss (sizes, dtype)."""
        cfg = self._memo.get(key)
        if cfg is None:
            cfg = self._known.get(key)
            if cfg is None:
                cfg = self.heuristic(key, args or {})
            cfg = dict(cfg)
            with self._lock:
                self._memo[key] = cfg
        return cfg

    def source(self, key: tuple) -> str:
        """Where the config for `key` comes from: "table" (tuned or committed) or "heuristic"."""
        return "table" if key in self._known else "heuristic"

    def put(self, key: tuple, config: Config) -> None:
        """Record a known-good config (tuned or committed); replaces what the key resolved to before."""
        with self._lock:
            self._known[key] = dict(config)
            self._memo.pop(key, None)

    def known(self) -> dict[Hashable, Config]:
        """A copy of the configs put() recorded, by key."""
        with self._lock:
            return {k: dict(v) for k, v in self._known.items()}

    def clear(self) -> None:
        with self._lock:
            self._known.clear()
            self._memo.clear()


def split_launch(config: Config) -> tuple[dict, dict]:
    """(constexpr kwargs, launch kwargs) of a config dict: num_warps / num_stages go to the launch."""
    meta = dict(config)
    launch = {"num_warps": meta.pop("num_warps", 4), "num_stages": meta.pop("num_stages", 3)}
    return meta, launch


def from_triton(config) -> Config:
    """A triton.Config (an autotuner's winner) as a plain dict."""
    return {**config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages}


# Triton's autotuner instead of the tables, for the launches made inside `with autotuning():` on this
# thread (what `bertfast tune` does); the winners are recorded in the tables with put().
_MODE = threading.local()


class autotuning:
    """Context manager: launchers in this thread run their `triton.autotune` wrapper and record winners."""

    def __enter__(self):
        self._before = getattr(_MODE, "autotune", False)
        _MODE.autotune = True
        return self

    def __exit__(self, *exc):
        _MODE.autotune = self._before
        return False


def autotune_requested() -> bool:
    """Whether the current thread is inside `autotuning()`."""
    return getattr(_MODE, "autotune", False)
