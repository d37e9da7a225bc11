"""Kernel launch configs that outlive the process: the committed per-GPU file and the user's tuned file.

Both have one format (`configs-<gpu-slug>.json` in bertfast/kernels/tables/, committed by the project;
`tuned-<gpu-slug>.json` in the user's cache directory, written by `bertfast tune`):

    {"header": {"format": "bertfast-kernel-configs/2", "device": <GPU name>, "triton": <version>},
     "kernels": {<kernel name>: {"hash": <kernel_hash(kernel)>, "configs": {<JSON list key>: <config>}}}}

A file made on another GPU or with another triton is ignored whole. Inside a valid file each kernel's
configs count only while that kernel's sources hash the same (`_sources.kernel_hash`): editing the
attention kernel drops the attention configs and keeps the GEMM ones.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._sources import KERNEL_SOURCES, kernel_hash
from ._utils import gpu_slug

FORMAT = "bertfast-kernel-configs/2"
TABLE_DIR = Path(__file__).resolve().parent / "tables"


def cache_dir() -> Path:
    """BERTFAST_CACHE_DIR, else $XDG_CACHE_HOME/bertfast, else ~/.cache/bertfast."""
    env = os.environ.get("BERTFAST_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bertfast"


def key_to_json(key: tuple) -> str:
    return json.dumps(list(key))


def key_from_json(text: str) -> tuple:
    return tuple(json.loads(text))


class TunedConfigCache:
    """Launch configs per kernel and shape key, for one GPU name and triton version.

    `kernel_dir` is where the kernel sources are hashed from (the installed kernels by default).
    After `load()`, `stale_kernels` names the kernels whose configs were dropped because their
    sources changed since the file was written.
    """

    def __init__(
        self,
        device_name: str,
        triton_version: str,
        directory: str | os.PathLike | None = None,
        prefix: str = "tuned",
        kernel_dir: str | os.PathLike | None = None,
    ):
        self.header = {"format": FORMAT, "device": device_name, "triton": triton_version}
        self.directory = Path(directory) if directory is not None else cache_dir()
        self.prefix = prefix
        self.kernel_dir = kernel_dir
        self.configs: dict[str, dict[str, dict[str, Any]]] = {}
        self.invalid_reason: str | None = None
        self.stale_kernels: list[str] = []

    @property
    def path(self) -> Path:
        return self.directory / f"{self.prefix}-{gpu_slug(self.header['device'])}.json"

    def _hash(self, kernel: str) -> str | None:
        return kernel_hash(kernel, self.kernel_dir) if kernel in KERNEL_SOURCES else None

    def load(self) -> bool:
        """Read the file; True when it was made for this GPU and triton (some kernels may be stale)."""
        self.configs, self.invalid_reason, self.stale_kernels = {}, None, []
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
        kernels = data.get("kernels")
        if not isinstance(kernels, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("configs"), dict) for v in kernels.values()
        ):
            self.invalid_reason = f"malformed cache file {self.path}: 'kernels' must map names to {{hash, configs}}"
            return False
        for name, entry in kernels.items():
            if entry.get("hash") != self._hash(name):
                self.stale_kernels.append(name)
            else:
                self.configs[name] = dict(entry["configs"])
        return True

    def get(self, kernel: str, key: tuple) -> dict[str, Any] | None:
        return self.configs.get(kernel, {}).get(key_to_json(key))

    def put(self, kernel: str, key: tuple, config: dict[str, Any]) -> None:
        if kernel not in KERNEL_SOURCES:
            raise ValueError(f"kernel must be one of {sorted(KERNEL_SOURCES)}, got {kernel!r}")
        self.configs.setdefault(kernel, {})[key_to_json(key)] = dict(config)

    def items(self) -> Iterator[tuple[str, tuple, dict[str, Any]]]:
        """(kernel, key, config) of every config held."""
        for kernel, configs in self.configs.items():
            for key, config in configs.items():
                yield kernel, key_from_json(key), config

    def as_dict(self) -> dict[str, Any]:
        """The file's content: the header and each kernel's source hash and configs."""
        kernels = {name: {"hash": self._hash(name), "configs": dict(c)} for name, c in self.configs.items()}
        return {"header": dict(self.header), "kernels": kernels}

    def save(self) -> Path:
        """Write the file at `path`, atomically: a crash never leaves a half-written file behind."""
        return self.save_as(self.path)

    def save_as(self, path: str | os.PathLike) -> Path:
        """Write the file at another path (e.g. a committed table being measured), atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tuned-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self.as_dict(), f, indent=1, sort_keys=True)
        os.replace(tmp, path)
        return path
