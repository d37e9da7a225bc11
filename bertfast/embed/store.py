"""The output directory: Parquet shards, `_manifest.json`, `_SUCCESS`, and how each is written safely.

    OUTPUT_DIR/
      part-00000.parquet      shard 0 (local path): columns id, text | text_sha256, embedding
      part-00001/             shard 1 written by Ray's Parquet writer: a directory of Parquet files
      _manifest.json          model, settings, input fingerprint, the finished shards
      _SUCCESS                only once every shard is finished

Names starting with "_" or "." are skipped by Parquet dataset readers (pyarrow, pandas, Spark, Ray),
so `pyarrow.parquet.read_table(OUTPUT_DIR)` reads exactly the finished shards. A shard is written
under a hidden temporary name and renamed into place once complete (fsync'd); only then is it listed
in the manifest, which is itself replaced atomically. A shard counts as finished only when the
manifest lists it AND its file or directory exists, so a half-written file is never taken as one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import uuid

import numpy as np

MANIFEST = "_manifest.json"
SUCCESS = "_SUCCESS"
STAGING = "_staging"
MANIFEST_VERSION = 1
# Settings that must agree between a run and the one that wrote the directory before.
MATCHED_KEYS = (
    "input",
    "model",
    "dim",
    "dtype",
    "normalize",
    "text_column",
    "shard_size",
    "num_shards",
)


def shard_name(k: int) -> str:
    return f"part-{k:05d}.parquet"


def shard_dir_name(k: int) -> str:
    return f"part-{k:05d}"


def output_schema(dim: int, text_column: str):
    import pyarrow as pa

    return pa.schema(
        [
            ("id", pa.int64()),
            (text_column, pa.string()),
            ("embedding", pa.list_(pa.float32(), dim)),
        ]
    )


def shard_table(ids: np.ndarray, texts: list[str], emb: np.ndarray, text_column: str):
    """(n,) ids, n texts, (n, dim) float32 -> the output table; texts are hashed for "text_sha256"."""
    import pyarrow as pa

    n, dim = emb.shape
    if text_column == "text_sha256":
        texts = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]
    flat = pa.array(np.ascontiguousarray(emb, dtype=np.float32).reshape(n * dim), type=pa.float32())
    return pa.Table.from_arrays(
        [
            pa.array(ids, type=pa.int64()),
            pa.array(texts, type=pa.string()),
            pa.FixedSizeListArray.from_arrays(flat, dim),
        ],
        schema=output_schema(dim, text_column),
    )


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_table_atomic(table, path: str) -> None:
    """Write to a hidden temp name beside `path`, fsync, rename: `path` is complete or absent."""
    import pyarrow.parquet as pq

    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex}.tmp")
    try:
        pq.write_table(table, tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json_atomic(data: dict, path: str) -> None:
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _is_ours(name: str) -> bool:
    """Entries this job writes: shards, their temp files, the manifest, the marker, Ray's scratch."""
    return (
        (name.startswith("part-") and (name.endswith(".parquet") or name[5:].isdigit()))
        or (name.startswith((".part-", f".{MANIFEST}")) and name.endswith(".tmp"))
        or name in (MANIFEST, SUCCESS, STAGING)
        or name.startswith("_ray_")
    )


class OutputDir:
    """The manifest in memory, and the only writer of it (thread-safe: workers report finished shards)."""

    def __init__(self, path: str, settings: dict):
        self.path = path
        self.settings = settings
        self.finished: dict[int, dict] = {}  # shard -> {"path": name, "rows": n}
        self.created = False
        self._lock = threading.Lock()

    # ---- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, output_dir: str | os.PathLike, settings: dict, *, overwrite: bool) -> OutputDir:
        """Create OUTPUT_DIR, or reopen one left by an earlier run with the same settings.

        A directory written with other settings (or holding shards but no manifest) is a ValueError
        unless `overwrite`, which removes only what this job writes there.
        """
        path = os.path.abspath(os.fspath(output_dir))
        if os.path.exists(path) and not os.path.isdir(path):
            raise ValueError(f"output_dir {path!r} exists and is not a directory")
        out = cls(path, settings)
        if not os.path.isdir(path):
            os.makedirs(path)
            out.created = True
        old = out._read_manifest()
        theirs = [n for n in os.listdir(path) if _is_ours(n)]
        if old is not None and not overwrite:
            diff = [k for k in MATCHED_KEYS if old.get(k) != settings.get(k)]
            if diff:
                detail = "; ".join(f"{k}: was {old.get(k)!r}, now {settings.get(k)!r}" for k in diff)
                raise ValueError(
                    f"output_dir {path!r} holds a run with other settings ({detail}); "
                    "pass overwrite=True (--overwrite) to replace it, or choose another directory"
                )
            out.finished = {int(k): v for k, v in old.get("finished", {}).items()}
        elif old is None and any(n.startswith("part-") for n in theirs) and not overwrite:
            raise ValueError(
                f"output_dir {path!r} holds part-* shards but no {MANIFEST}; pass overwrite=True (--overwrite) "
                "to replace them, or choose another directory"
            )
        elif overwrite:
            for name in theirs:
                _remove(os.path.join(path, name))
        out._drop_leftovers()
        out.save()
        return out

    def _read_manifest(self) -> dict | None:
        p = os.path.join(self.path, MANIFEST)
        if not os.path.exists(p):
            return None
        try:
            with open(p, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"output_dir {self.path!r}: {MANIFEST} cannot be read ({e}); use --overwrite") from None
        if not isinstance(data, dict) or data.get("version") != MANIFEST_VERSION:
            raise ValueError(f"output_dir {self.path!r}: {MANIFEST} is not one this version wrote; use --overwrite")
        return data

    def _drop_leftovers(self) -> None:
        """Temp files of a killed run, shards not (or no longer) listed, a stale _SUCCESS."""
        listed = {v["path"] for k, v in self.finished.items()}
        for name in os.listdir(self.path):
            full = os.path.join(self.path, name)
            if name.endswith(".tmp") and _is_ours(name):
                _remove(full)
            elif name.startswith("part-") and _is_ours(name) and name not in listed:
                _remove(full)  # finished by a run killed before it could record it: recomputed
        for k in [k for k, v in self.finished.items() if not os.path.exists(os.path.join(self.path, v["path"]))]:
            del self.finished[k]  # listed but deleted since: recomputed
        if len(self.finished) < self.settings["num_shards"]:
            _remove(os.path.join(self.path, SUCCESS))

    def scratch(self, name: str) -> str:
        """A scratch folder (staging, Ray's writes) inside OUTPUT_DIR, created on demand."""
        path = os.path.join(self.path, name)
        os.makedirs(path, exist_ok=True)
        return path

    # ---- progress ------------------------------------------------------------------------------
    def is_finished(self, k: int) -> bool:
        return k in self.finished

    def mark_finished(self, k: int, name: str, rows: int) -> None:
        with self._lock:
            self.finished[k] = {"path": name, "rows": int(rows)}
            self.save()

    def save(self) -> None:
        data = dict(self.settings)
        data["version"] = MANIFEST_VERSION
        data["finished"] = {str(k): self.finished[k] for k in sorted(self.finished)}
        data["finished_shards"] = len(self.finished)
        data["rows_written"] = sum(v["rows"] for v in self.finished.values())
        write_json_atomic(data, os.path.join(self.path, MANIFEST))

    def complete(self) -> bool:
        """Write _SUCCESS when every shard is finished; True if it is there now."""
        if len(self.finished) != self.settings["num_shards"]:
            return False
        for name in os.listdir(self.path):
            if name == STAGING or name.startswith("_ray_"):
                _remove(os.path.join(self.path, name))
        with open(os.path.join(self.path, SUCCESS), "w") as f:
            f.flush()
            os.fsync(f.fileno())
        return True

    def abandon(self) -> None:
        """After a failure with nothing finished: leave no trace in a directory this run created."""
        if self.finished:
            return
        for name in os.listdir(self.path):
            if _is_ours(name):
                _remove(os.path.join(self.path, name))
        if self.created and not os.listdir(self.path):
            os.rmdir(self.path)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)
