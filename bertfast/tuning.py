"""Tuned kernel configs that outlive the process, the committed per-GPU tables, and `bertfast tune`.

Kernel launchers never autotune at call time: each tunable kernel owns a `ConfigTable`
(bertfast.kernels._configs) that answers from known configs, else from a deterministic heuristic.
This module fills those tables, once per process and device (`seed_device`), from two sources:

1. the committed table for this GPU, shipped in bertfast/kernels/tables/ (measured by the project on
   that GPU; absent for GPUs nobody measured, which then run the heuristics), then
2. the user's own tuned-config file, `~/.cache/bertfast/tuned-<gpu>.json`, written by `bertfast tune`
   (`TunedConfigCache`: valid only for the same GPU name, triton version and kernel source hash).

`bertfast.runtime.tune()` runs Triton's real autotuner over a model's shapes and writes the file with
`harvest()`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import torch

KERNEL_DIR = Path(__file__).resolve().parent / "kernels"


def gpu_slug(device_name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3' (the kernels' own rule, for their tables too)."""
    from .kernels._utils import gpu_slug as slug

    return slug(device_name)


def cache_dir() -> Path:
    """BERTFAST_CACHE_DIR, else $XDG_CACHE_HOME/bertfast, else ~/.cache/bertfast."""
    env = os.environ.get("BERTFAST_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bertfast"


def kernel_source_hash() -> str:
    """Hash of every kernel source file: an edited kernel invalidates its tuned configs."""
    h = hashlib.sha256()
    for path in sorted(KERNEL_DIR.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


class TunedConfigCache:
    """Kernel configs chosen per shape bucket, stored per (device name, triton version, kernel hash).

    The file holds one JSON object with a header of those three fields and `configs`:
    {kernel name: {shape key: config dict}}. A file whose header differs from the running process
    (another GPU, another triton, edited kernels) is ignored and overwritten on save, never used.
    """

    def __init__(
        self,
        device_name: str,
        triton_version: str,
        source_hash: str | None = None,
        directory: str | os.PathLike | None = None,
        prefix: str = "tuned",
    ):
        self.header = {
            "device": device_name,
            "triton": triton_version,
            "kernels": source_hash or kernel_source_hash(),
        }
        self.directory = Path(directory) if directory is not None else cache_dir()
        self.prefix = prefix
        self.configs: dict[str, dict[str, dict[str, Any]]] = {}
        self.invalid_reason: str | None = None

    @property
    def path(self) -> Path:
        return self.directory / f"{self.prefix}-{gpu_slug(self.header['device'])}.json"

    def load(self) -> bool:
        """Read the file; True when it was valid for this process."""
        self.configs, self.invalid_reason = {}, None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            self.invalid_reason = "no cache file"
            return False
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            self.invalid_reason = f"unreadable cache file {self.path}: {e}"
            return False
        header = data.get("header") if isinstance(data, dict) else None
        if header != self.header:
            self.invalid_reason = f"stale cache file {self.path}: made for {header}, running {self.header}"
            return False
        configs = data.get("configs")
        if not isinstance(configs, dict):
            self.invalid_reason = f"malformed cache file {self.path}: no 'configs' object"
            return False
        self.configs = configs
        return True

    def get(self, kernel: str, key: str) -> dict[str, Any] | None:
        return self.configs.get(kernel, {}).get(key)

    def put(self, kernel: str, key: str, config: dict[str, Any]) -> None:
        self.configs.setdefault(kernel, {})[key] = dict(config)

    def save(self) -> Path:
        """Atomic write: a crash never leaves a half-written file behind."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tuned-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"header": self.header, "configs": self.configs}, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path)
        return self.path


# --------------------------------------------------------------------------- config tables
def config_tables() -> dict[str, Any]:
    """The ConfigTable of every tunable kernel, by the name the cache file uses (imports triton)."""
    from .kernels import attention, gemm, gemm_splitk, gemm_tma

    return {
        "linear": gemm.GEMM_CONFIGS,
        "linear_splitk": gemm_splitk.SPLITK_CONFIGS,
        "linear_tma": gemm_tma.TMA_CONFIGS,
        "varlen_attention": attention.ATTENTION_CONFIGS,
    }


def _key_to_json(key: tuple) -> str:
    return json.dumps(list(key))


def _key_from_json(text: str) -> tuple:
    return tuple(json.loads(text))


def harvest(cache: TunedConfigCache, tables: dict[str, Any] | None = None) -> int:
    """Copy every known config out of the tables into `cache`; returns how many entries were copied."""
    tables = config_tables() if tables is None else tables
    count = 0
    for name, table in tables.items():
        for key, config in table.known().items():
            cache.put(name, _key_to_json(key), config)
            count += 1
    return count


def seed(cache: TunedConfigCache, tables: dict[str, Any] | None = None) -> int:
    """Put the cache's configs into the tables (they replace heuristics and earlier entries)."""
    tables = config_tables() if tables is None else tables
    count = 0
    for name, table in tables.items():
        for key, config in cache.configs.get(name, {}).items():
            table.put(_key_from_json(key), config)
            count += 1
    return count


def device_cache(
    device: torch.device, directory: str | os.PathLike | None = None, prefix: str = "tuned"
) -> TunedConfigCache:
    import triton

    return TunedConfigCache(torch.cuda.get_device_name(device), triton.__version__, directory=directory, prefix=prefix)


# The project's measured configs per GPU, committed beside the kernels (same format as the user's file).
COMMITTED_DIR = KERNEL_DIR / "tables"
_SEEDED: set[int] = set()
_SEED_LOCK = threading.Lock()


def seed_device(device: torch.device) -> int:
    """Once per process and CUDA device: the committed configs, then the user's tuned file, into the
    tables. Returns how many configs were loaded (0 when neither exists or both are stale)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index in _SEEDED:
        return 0
    with _SEED_LOCK:
        if index in _SEEDED:
            return 0
        dev = torch.device("cuda", index)
        count = 0
        for cache in (device_cache(dev, COMMITTED_DIR, prefix="configs"), device_cache(dev)):
            if cache.load():
                count += seed(cache)
        _SEEDED.add(index)
        return count
