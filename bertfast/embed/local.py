"""One machine: one SentenceEncoder per device (every local GPU, else the CPU), one worker thread each.

The calling thread reads the input and hands shards to the workers through a small bounded queue
(so memory holds a few shards, never the corpus). A worker encodes a shard, writes it atomically and
records it in the manifest. Threads suffice: the model spends its time in kernels that release the
GIL, and each worker makes its own device current, since a Triton launch targets the current device.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from .inputs import Shard
from .store import OutputDir, shard_name, shard_table, write_table_atomic


@dataclass(frozen=True)
class EncodeSettings:
    model_dir: str
    dtype: str | None  # "float32" | "float16" | "bfloat16" | None: the checkpoint's
    batch_size: int
    normalize: bool  # L2-normalize on top of what the model folder says
    text_column: str  # "text" | "text_sha256"


def torch_dtype(name: str | None):
    import torch

    return None if name is None else getattr(torch, name)


def load_encoder(settings: EncodeSettings, device: str):
    from ..sentence import SentenceEncoder

    return SentenceEncoder.from_pretrained(settings.model_dir, device=device, dtype=torch_dtype(settings.dtype))


def embed_texts(encoder, texts: list[str], settings: EncodeSettings) -> np.ndarray:
    """n texts -> (n, dim) float32, exactly `encoder.encode`'s vectors (L2-normalized when asked)."""
    emb = np.asarray(encoder.encode(texts, batch_size=settings.batch_size), dtype=np.float32)  # (n, dim)
    if settings.normalize:
        norms = np.linalg.norm(emb, axis=1, keepdims=True)  # (n, 1)
        emb = emb / np.maximum(norms, 1e-12)
    return emb


def local_devices(device: str) -> list[str]:
    """ "auto": every CUDA device, else the CPU; "cuda": every CUDA device (error if none); "cuda:N"; "cpu"."""
    import torch

    if device == "cpu":
        return ["cpu"]
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device.startswith("cuda:"):
        index = int(device[5:])
        if index >= n:
            raise ValueError(f"device {device!r}: this machine has {n} CUDA device(s)")
        return [device]
    if n == 0:
        if device == "cuda":
            raise ValueError("device 'cuda': no CUDA device is available here (use 'cpu' or 'auto')")
        return ["cpu"]
    return [f"cuda:{i}" for i in range(n)]


def _on_device(device: str):
    import torch

    return torch.cuda.device(torch.device(device)) if device.startswith("cuda") else contextlib.nullcontext()


def run_local(
    shards: Iterable[Shard],
    out: OutputDir,
    settings: EncodeSettings,
    devices: list[str],
    dim: int,
    on_done: Callable[[int], None],
) -> int:
    """Embed every shard `shards` yields into OUTPUT_DIR; returns how many were computed.
    The first worker error stops the reader and the other workers, and is raised here."""
    encoders = [load_encoder(settings, d) for d in devices]
    todo: queue.Queue = queue.Queue(maxsize=2 * len(devices))
    failed = threading.Event()
    errors: list[BaseException] = []
    done = [0]
    lock = threading.Lock()

    def work(encoder, device: str) -> None:
        try:
            with _on_device(device):
                while not failed.is_set():
                    try:
                        shard = todo.get(timeout=0.1)
                    except queue.Empty:
                        continue
                    if shard is None:
                        break
                    if shard.texts:
                        emb = embed_texts(encoder, shard.texts, settings)  # (n, dim)
                    else:
                        emb = np.zeros((0, dim), dtype=np.float32)
                    name = shard_name(shard.index)
                    write_table_atomic(
                        shard_table(shard.ids, shard.texts, emb, settings.text_column), f"{out.path}/{name}"
                    )
                    out.mark_finished(shard.index, name, len(shard.ids))
                    with lock:
                        done[0] += 1
                        on_done(shard.index)
        except BaseException as e:  # noqa: BLE001 -- handed to the caller's thread, which raises it
            errors.append(e)
            failed.set()

    workers = [
        threading.Thread(target=work, args=(e, d), name=f"bertfast-embed-{d}", daemon=True)
        for e, d in zip(encoders, devices)
    ]
    for w in workers:
        w.start()
    try:
        for shard in shards:
            if not _put(todo, shard, failed):
                break
    finally:
        for _ in workers:
            _put(todo, None, failed)
        for w in workers:
            w.join()
    if errors:
        raise errors[0]
    return done[0]


def _put(q: queue.Queue, item, failed: threading.Event) -> bool:
    """Put, unless the workers failed (then they no longer drain the queue): False."""
    while not failed.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
