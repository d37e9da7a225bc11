"""Everything that decides a launch on one device, in one visible home: `launch_state(device)`.

A launcher asks its device's `LaunchState` for

- `config(kernel, key, heuristic)`: the launch config (tile sizes, warps, stages) of a shape key: a
  config put there (the committed per-GPU file, then the user's tuned file, then `put_config`, each
  replacing the one before), else `heuristic(key)`. Memoised per (kernel, key): a hot call is one
  dict lookup;
- `gemm_choice(key)`: the GEMM implementation the per-GPU choice table measured fastest for a key
  (None where the table has no row);
- `memo(name, key, build)`: anything a launcher derives from the above (launch kwargs, a dispatch
  decision), built once per key and forgotten whenever the state changes.

Every change (`put_config`, `set_choice_table`) bumps `version`; CUDA graphs remember the version
they were captured under and are dropped when it moves. `with state.autotuning():` makes the
launches on this device run Triton's autotuner and record the winners with `put_config` (what
`bertfast tune` does).

`launch_state(device)` creates the state lazily, once per device, under a lock; for a CUDA device it
loads the committed tables (bertfast/kernels/tables/) and the user's tuned file then. Importing this
module touches no GPU.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Hashable, Iterator
from typing import Any, Optional

import torch
import triton

from . import choice_table, config_file
from ._utils import gpu_slug

Config = dict[str, Any]

# The multiprocessor count the heuristics size grids for on CPU tensors under the interpreter: few
# programs, so tests stay fast.
INTERPRETER_SMS = 4


class LaunchState:
    """The configs, GEMM choices and their memo for launches on one device."""

    def __init__(self, device: torch.device, choices: Optional[choice_table.ChoiceTable] = None):
        self.device = device
        self.version = 0
        self.choices = choices if choices is not None else choice_table.ChoiceTable()
        self._known: dict[str, dict[Hashable, Config]] = {}
        self._configs: dict[tuple, Config] = {}  # (kernel, key) -> config handed out
        self._memo: dict[tuple, Any] = {}  # (name, key) -> what a launcher built from the state
        self._autotune = 0
        self._num_sms: Optional[int] = None
        self._capability: Optional[tuple[int, int]] = None
        self._lock = threading.RLock()

    @property
    def num_sms(self) -> int:
        """Multiprocessors of the CUDA device (read once), INTERPRETER_SMS for CPU tensors."""
        if self._num_sms is None:
            if self.device.type == "cuda":
                self._num_sms = torch.cuda.get_device_properties(self.device).multi_processor_count
            else:
                self._num_sms = INTERPRETER_SMS
        return self._num_sms

    @property
    def capability(self) -> Optional[tuple[int, int]]:
        """(major, minor) of the CUDA device (read once); None for CPU tensors (the interpreter runs
        every kernel there)."""
        if self._capability is None and self.device.type == "cuda":
            self._capability = torch.cuda.get_device_capability(self.device)
        return self._capability

    # ---------------------------------------------------------------------------------- configs
    def config(self, kernel: str, key: tuple, heuristic: Callable[[tuple], Config]) -> Config:
        """The known config for (kernel, key), else heuristic(key); memoised. Treat it as read-only."""
        cfg = self._configs.get((kernel, key))
        if cfg is None:
            with self._lock:
                known = self._known.get(kernel, {}).get(key)
                cfg = dict(known if known is not None else heuristic(key))
                self._configs[(kernel, key)] = cfg
        return cfg

    def put_config(self, kernel: str, key: tuple, config: Config) -> None:
        """Record a known-good config (tuned or committed); it replaces what the key resolved to."""
        with self._lock:
            self._known.setdefault(kernel, {})[key] = dict(config)
            self._changed()

    def config_source(self, kernel: str, key: tuple) -> str:
        """Where (kernel, key)'s config comes from: "table" (tuned or committed) or "heuristic"."""
        return "table" if key in self._known.get(kernel, {}) else "heuristic"

    def known_configs(self, kernel: Optional[str] = None) -> dict:
        """A copy of the configs put here: {kernel: {key: config}}, or {key: config} of one kernel."""
        with self._lock:
            if kernel is not None:
                return {k: dict(v) for k, v in self._known.get(kernel, {}).items()}
            return {name: {k: dict(v) for k, v in known.items()} for name, known in self._known.items()}

    def clear_configs(self, kernel: Optional[str] = None) -> None:
        """Forget the known configs (of one kernel, or all): the heuristics answer again."""
        with self._lock:
            if kernel is None:
                self._known.clear()
            else:
                self._known.pop(kernel, None)
            self._changed()

    # ---------------------------------------------------------------------------------- GEMM choices
    def gemm_choice(self, key: tuple) -> Optional[str]:
        """The choice table's measured implementation for a GEMM key, None where it has no row."""
        return self.choices.choice(key)

    def set_choice_table(self, table: choice_table.ChoiceTable) -> None:
        with self._lock:
            self.choices = table
            self._changed()

    # ---------------------------------------------------------------------------------- derived
    def memo(self, name: str, key: Hashable, build: Callable[[Hashable], Any]) -> Any:
        """build(key), once per (name, key) until the state next changes."""
        hit = self._memo.get((name, key), _MISSING)
        if hit is _MISSING:
            version = self.version
            hit = build(key)
            with self._lock:
                if version == self.version:  # not built from a state that changed meanwhile
                    self._memo[(name, key)] = hit
        return hit

    def _changed(self) -> None:
        self._configs.clear()
        self._memo.clear()
        self.version += 1

    # ---------------------------------------------------------------------------------- tuning
    @property
    def autotune(self) -> bool:
        """Whether launches on this device run Triton's autotuner (inside `autotuning()`)."""
        return self._autotune > 0

    @contextlib.contextmanager
    def autotuning(self) -> Iterator[LaunchState]:
        """Launches on this device, from any thread, run Triton's autotuner and record the winners."""
        with self._lock:
            self._autotune += 1
        try:
            yield self
        finally:
            with self._lock:
                self._autotune -= 1

    def load(self, cache: config_file.TunedConfigCache) -> int:
        """Put a config file's configs here (they replace earlier ones); returns how many."""
        count = 0
        with self._lock:
            for kernel, key, config in cache.items():
                self._known.setdefault(kernel, {})[key] = dict(config)
                count += 1
            self._changed()
        return count


_MISSING = object()  # a memo entry may be None
_STATES: dict[torch.device, LaunchState] = {}
_STATES_LOCK = threading.Lock()


def _normalize(device: torch.device | str) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def launch_state(device: torch.device | str) -> LaunchState:
    """THE launch state of a device, created on first use; for CUDA it loads the committed per-GPU
    choice table and config file, then the user's tuned-config file."""
    state = _STATES.get(device)
    if state is not None:
        return state
    device = _normalize(device)
    with _STATES_LOCK:
        state = _STATES.get(device)
        if state is None:
            state = _STATES[device] = _create(device)
    return state


def _create(device: torch.device) -> LaunchState:
    if device.type != "cuda":
        return LaunchState(device, choice_table.ChoiceTable(invalid_reason=f"no tables for {device.type} tensors"))
    name = torch.cuda.get_device_name(device)
    choices = choice_table.load_choice_table(choice_table.TABLE_DIR / f"{gpu_slug(name)}.json", name)
    state = LaunchState(device, choices)
    for cache in (device_config_file(device, config_file.TABLE_DIR, "configs"), device_config_file(device)):
        if cache.load():
            state.load(cache)
    return state


def device_config_file(
    device: torch.device | str, directory=None, prefix: str = "tuned"
) -> config_file.TunedConfigCache:
    """The config file of a CUDA device: the user's tuned file by default, or `prefix` in `directory`."""
    name = torch.cuda.get_device_name(_normalize(device))
    return config_file.TunedConfigCache(name, triton.__version__, directory=directory, prefix=prefix)


def set_choice_table(device: torch.device | str, table: choice_table.ChoiceTable) -> None:
    """Use `table` for the GEMM choices on `device` from now on (drops graphs captured under the old one)."""
    launch_state(device).set_choice_table(table)
