"""`bertfast.encode()`: the one-call sentence embedding, with the loaded models kept between calls.

Loading a model (config, weights, tokenizer, pooling files) costs far more than embedding a few
sentences, so `encode()` keeps one `SentenceEncoder` per (model folder, device, dtype, backend) and
reuses it. The cache is bounded: it holds the `MAX_MODELS` most recently used encoders and drops the
least recently used one past that (its memory is freed once no caller holds it). A folder rewritten
on disk while the process runs is not reloaded: `clear()` drops every cached encoder.

Thread-safe: concurrent first calls for one key load the model once; calls for other keys do not
wait for that load.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

import torch

from ._dtypes import parse_dtype
from .sentence import SentenceEncoder, default_model_dir

__all__ = ["MAX_MODELS", "cached_encoder", "clear", "encode"]

MAX_MODELS = 4

_Key = tuple[str, str, torch.dtype | None, str]


class _Slot:
    """One key's encoder; its lock is held while the encoder loads, so a key loads once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.encoder: SentenceEncoder | None = None


_lock = threading.Lock()  # guards _slots (order and membership), never held while a model loads
_slots: OrderedDict[_Key, _Slot] = OrderedDict()


def _key(model_dir, device, dtype, backend) -> _Key:
    path = os.path.realpath(os.fspath(model_dir) if model_dir is not None else default_model_dir())
    try:
        where = torch.device(device)  # "cuda" and "cuda:0" stay apart: nothing asks CUDA which is current
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be a torch.device or a name such as 'cpu' or 'cuda:0', got {device!r}") from None
    return path, str(where), None if dtype is None else parse_dtype(dtype), backend


def cached_encoder(
    model_dir: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    backend: str = "auto",
) -> SentenceEncoder:
    """The cached `SentenceEncoder.from_pretrained(model_dir, device=, dtype=, backend=)`, loaded on first use."""
    key = _key(model_dir, device, dtype, backend)
    with _lock:
        slot = _slots.get(key)
        if slot is None:
            slot = _slots[key] = _Slot()
            while len(_slots) > MAX_MODELS:
                _slots.popitem(last=False)
        else:
            _slots.move_to_end(key)
    with slot.lock:
        if slot.encoder is None:
            try:
                slot.encoder = SentenceEncoder.from_pretrained(key[0], device=key[1], dtype=key[2], backend=backend)
            except BaseException:
                with _lock:  # a failed load holds no place in the cache; the next call tries again
                    if _slots.get(key) is slot:
                        del _slots[key]
                raise
        return slot.encoder


def clear() -> None:
    """Drop every cached encoder (the next `encode()` of each model loads it again)."""
    with _lock:
        _slots.clear()


def encode(
    sentences: str | list[str],
    model_dir: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    backend: str = "auto",
    batch_size: int = 64,
    **encode_kwargs,
):
    """Embeddings of `sentences` with the model in `model_dir` (default: the embedded MiniLM-L6), loaded
    once per (model_dir, device, dtype, backend) and reused by later calls. Further keyword arguments go
    to `SentenceEncoder.encode` (output_value, precision, normalize_embeddings, ...)."""
    encoder = cached_encoder(model_dir, device=device, dtype=dtype, backend=backend)
    return encoder.encode(sentences, batch_size=batch_size, **encode_kwargs)
