"""Past one machine: Ray Data with an actor pool, one model per GPU (or CPU actors without GPUs).

Stable ids. Ray's readers do not number rows, and blocks reach the actors in no fixed order. So the
driver first streams the input once and writes each unfinished shard as an indexed Parquet file
`OUTPUT_DIR/_staging/shard-NNNNN.parquet` (columns id, text); that pass is plain I/O, small next to
the model. Then:

    ray.data.read_parquet(staged files)                      rows (id, text)
      .map_batches(ShardEmbedder, actor pool)               rows (id, text | text_sha256, embedding, shard)
      .write_parquet(OUTPUT_DIR/_ray_scratch, partition_cols=["shard"])   -> _ray_scratch/shard=K/*.parquet

A shard's folder is adopted as `OUTPUT_DIR/part-NNNNN/` only once its files are all readable and
their ids are exactly the staged ids of that shard (no row missing, none twice); a run killed midway
adopts what is complete on the next start and recomputes the rest. OUTPUT_DIR and the model folder
must be reachable under the same paths from every node (a shared file system).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterable

import numpy as np

from .inputs import Shard
from .local import EncodeSettings, embed_texts, load_encoder
from .store import (
    STAGING,
    OutputDir,
    shard_dir_name,
    shard_name,
    shard_table,
    write_table_atomic,
)

SCRATCH = "_ray_scratch"
INSTALL_HINT = "pip install 'bertfast[ray]'"


def import_ray():
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise ImportError(
            f"ray: the Ray path needs Ray Data, which is not installed here ({e}); {INSTALL_HINT}"
        ) from None
    return ray


class ShardEmbedder:
    """The actor: loads the model once, then maps pyarrow batches of (id, text) to output rows."""

    def __init__(
        self,
        settings: EncodeSettings,
        device: str,
        threads: int | None,
        shard_size: int,
    ):
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.settings = settings
        self.shard_size = shard_size
        self.encoder = load_encoder(settings, device)

    def __call__(self, batch):
        import pyarrow as pa

        ids = batch.column("id").to_numpy()  # (n,) int64
        texts = batch.column("text").to_pylist()
        emb = embed_texts(self.encoder, texts, self.settings)  # (n, dim)
        table = shard_table(ids, texts, emb, self.settings.text_column)
        return table.append_column("shard", pa.array(ids // self.shard_size, type=pa.int64()))


@contextlib.contextmanager
def ray_silenced(enabled: bool):
    """While enabled, Ray prints nothing but what ends the run as an exception: its Python loggers ("ray",
    and "ray.data", whose level Ray Data re-reads from RAY_DATA_LOG_LEVEL at every execution) are held
    at ERROR and the C++ core worker's log (RAY_BACKEND_LOG_LEVEL) at fatal. Restored afterwards."""
    if not enabled:
        yield
        return
    env = {"RAY_DATA_LOG_LEVEL": "ERROR", "RAY_BACKEND_LOG_LEVEL": "fatal"}
    saved_env = {k: os.environ.get(k) for k in env}
    loggers = [logging.getLogger(name) for name in ("ray", "ray.data")]
    saved_levels = [logger.level for logger in loggers]
    os.environ.update(env)
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for logger, level in zip(loggers, saved_levels):
            logger.setLevel(level)


@contextlib.contextmanager
def _stderr_discarded():
    """File descriptor 2 to /dev/null: the C++ core worker announces its log level there while it starts,
    whatever the level. A failed start still raises, with its message, in Python."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def connect(address: str, quiet: bool):
    """`auto`: the running cluster if there is one (RAY_ADDRESS, or one started with `ray start` here),
    else a new local Ray; anything else is a cluster address. Reuses a Ray already initialised.
    quiet: no worker logs on the driver, no Ray Data progress bars, nothing from starting (run it under
    ray_silenced for the rest)."""
    ray = import_ray()
    if not ray.is_initialized():
        level = logging.ERROR if quiet else logging.INFO
        with _stderr_discarded() if quiet else contextlib.nullcontext():
            if address.startswith("ray://"):  # Ray Client: the cluster's own settings apply
                ray.init(address=address, logging_level=level)
            else:
                ray.init(
                    address=None if address == "auto" else address,
                    include_dashboard=False,
                    log_to_driver=not quiet,
                    logging_level=level,
                )
    ray.data.DataContext.get_current().enable_progress_bars = not quiet
    return ray


def actor_pool(ray, device: str) -> dict:
    """map_batches arguments: one actor per GPU, else CPU actors that leave a CPU to reads and writes."""
    res = ray.cluster_resources()
    gpus, cpus = int(res.get("GPU", 0)), int(res.get("CPU", 1))
    if device != "cpu" and gpus > 0:
        return {
            "concurrency": gpus,
            "num_gpus": 1,
            "num_cpus": 1 if cpus > gpus else 0,
            "device": "cuda",
            "threads": None,
        }
    if device not in ("auto", "cpu"):
        raise ValueError(f"device {device!r}: the Ray cluster has no GPU (use 'cpu' or 'auto')")
    if cpus < 2:
        return {
            "concurrency": 1,
            "num_gpus": 0,
            "num_cpus": 0,
            "device": "cpu",
            "threads": 1,
        }
    threads = min(8, cpus - 1)
    return {
        "concurrency": max(1, (cpus - 1) // threads),
        "num_gpus": 0,
        "num_cpus": threads,
        "device": "cpu",
        "threads": threads,
    }


def stage(
    shards: Iterable[Shard], out: OutputDir, dim: int, settings: EncodeSettings, on_done: Callable[[int], None]
) -> dict[int, str]:
    """Write each unfinished shard as `_staging/shard-NNNNN.parquet` (id, text). A shard without
    texts (all blank lines) is finished here directly. Returns shard -> staged path."""
    import pyarrow as pa

    folder = out.scratch(STAGING)
    staged = {}
    for shard in shards:
        if not shard.texts:
            empty = np.zeros((0, dim), dtype=np.float32)
            write_table_atomic(
                shard_table(shard.ids, [], empty, settings.text_column), os.path.join(out.path, shard_name(shard.index))
            )
            out.mark_finished(shard.index, shard_name(shard.index), 0)
            on_done(shard.index)
            continue
        path = os.path.join(folder, f"shard-{shard.index:05d}.parquet")
        if not os.path.exists(path):  # staged by an earlier attempt on the same input (the manifest matched)
            write_table_atomic(
                pa.table({"id": pa.array(shard.ids, pa.int64()), "text": pa.array(shard.texts, pa.string())}), path
            )
        staged[shard.index] = path
    return staged


def adopt_finished(out: OutputDir, staged: dict[int, str], on_done: Callable[[int], None]) -> None:
    """Move every complete `_ray_scratch/shard=K/` into place as `part-K/`; drop incomplete ones."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    scratch = os.path.join(out.path, SCRATCH)
    if not os.path.isdir(scratch):
        return
    for name in sorted(os.listdir(scratch)):
        folder = os.path.join(scratch, name)
        k = int(name.split("=", 1)[1]) if name.startswith("shard=") and name[6:].isdigit() else None
        if k is None or k not in staged or out.is_finished(k):
            continue
        want = pq.read_table(staged[k], columns=["id"]).column("id").to_numpy()
        try:
            got = np.sort(
                np.concatenate(
                    [
                        pq.read_table(os.path.join(folder, f), columns=["id"]).column("id").to_numpy()
                        for f in sorted(os.listdir(folder))
                        if not f.startswith((".", "_"))
                    ]
                )
            )
        except (
            pa.ArrowException,
            OSError,
        ):  # a file cut short by a killed writer: not finished
            continue
        if got.shape == want.shape and np.array_equal(got, want):
            target = shard_dir_name(k)
            os.replace(folder, os.path.join(out.path, target))
            out.mark_finished(k, target, len(want))
            on_done(k)
    shutil.rmtree(scratch)


def run_ray(
    shards: Iterable[Shard],
    out: OutputDir,
    settings: EncodeSettings,
    dim: int,
    *,
    address: str,
    device: str,
    shard_size: int,
    quiet: bool,
    on_done: Callable[[int], None],
) -> int:
    """Embed the unfinished shards on Ray; returns how many shards were computed."""
    with ray_silenced(quiet):
        return _run_ray(shards, out, settings, dim, address, device, shard_size, quiet, on_done)


def _run_ray(shards, out: OutputDir, settings: EncodeSettings, dim: int, address, device, shard_size, quiet, on_done):
    ray = connect(address, quiet)
    pool = actor_pool(ray, device)
    staged = stage(shards, out, dim, settings, on_done)
    adopt_finished(out, staged, on_done)  # left complete by a killed run
    todo = [staged[k] for k in sorted(staged) if not out.is_finished(k)]
    if not todo:
        return 0
    ds = ray.data.read_parquet(todo, override_num_blocks=len(todo))
    ds = ds.map_batches(
        ShardEmbedder,
        fn_constructor_kwargs={
            "settings": settings,
            "device": pool["device"],
            "threads": pool["threads"],
            "shard_size": shard_size,
        },
        batch_size=settings.batch_size * 16,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=pool["concurrency"]),
        num_gpus=pool["num_gpus"],
        num_cpus=pool["num_cpus"],
    )
    ds.write_parquet(os.path.join(out.path, SCRATCH), partition_cols=["shard"])
    before = len(out.finished)
    adopt_finished(out, staged, on_done)
    missing = [k for k in sorted(staged) if not out.is_finished(k)]
    if missing:
        raise RuntimeError(f"Ray finished, but shards {missing[:10]} came back incomplete; rerun to recompute them")
    return len(out.finished) - before
