"""Tuned kernel configs that outlive the process, and `bertfast tune`.

The GEMM and attention kernels autotune per shape bucket on first use. `harvest()` copies the
winners out of Triton's autotuners into a `TunedConfigCache` file (per GPU name, triton version and
kernel source hash: bertfast.graphs); `seed()` puts them back, so a later process starts without
benchmarking anything. `ops` seeds once per process, at the first Triton call on a CUDA device.
`tune()` does the work ahead of time: it runs the model at every token bucket (autotuning and
capturing the CUDA graphs), times the replays, and writes the cache.
"""

from __future__ import annotations

import functools
import importlib
import json
import statistics
from typing import Any

import torch

from .graphs import TunedConfigCache, power_of_two_buckets

# The autotuned launch objects, by the name the cache file uses.
_TUNED = {
    "linear": ("bertfast.kernels.gemm", "_linear_fwd_tuned"),
    "varlen_attention": ("bertfast.kernels.attention", "_varlen_attention_fwd_tuned"),
}


def autotuners() -> dict[str, Any]:
    return {name: getattr(importlib.import_module(mod), attr) for name, (mod, attr) in _TUNED.items()}


def _config_dict(config) -> dict[str, Any]:
    return {"kwargs": dict(config.kwargs), "num_warps": config.num_warps, "num_stages": config.num_stages}


def harvest(cache: TunedConfigCache, tuners: dict[str, Any] | None = None) -> int:
    """Copy every autotuned winner into `cache`; returns how many entries it holds for these kernels."""
    tuners = autotuners() if tuners is None else tuners
    count = 0
    for name, tuner in tuners.items():
        for key, config in tuner.cache.items():
            cache.put(name, json.dumps(list(key)), _config_dict(config))
            count += 1
    return count


def seed(cache: TunedConfigCache, tuners: dict[str, Any] | None = None) -> int:
    """Put the cache's configs into the autotuners (entries they already hold are kept)."""
    import triton

    tuners = autotuners() if tuners is None else tuners
    count = 0
    for name, tuner in tuners.items():
        for key, cfg in cache.configs.get(name, {}).items():
            k = tuple(json.loads(key))
            if k not in tuner.cache:
                tuner.cache[k] = triton.Config(cfg["kwargs"], num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
                count += 1
    return count


def device_cache(device: torch.device) -> TunedConfigCache:
    import triton

    return TunedConfigCache(torch.cuda.get_device_name(device), triton.__version__)


@functools.lru_cache(maxsize=None)
def seed_from_disk(device_index: int) -> int:
    """Once per process and device: load the tuned-config file, if valid, into the autotuners."""
    cache = device_cache(torch.device("cuda", device_index))
    return seed(cache) if cache.load() else 0


# --------------------------------------------------------------------------- bertfast tune
def _time_ms(fn, reps: int = 30) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    samples = []
    for _ in range(reps):
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
    return statistics.median(samples)


def tune(model, *, max_tokens: int = 4096, seq_len: int = 128, device: str = "cuda") -> list[dict[str, Any]]:
    """Autotune and capture every token bucket up to `max_tokens` for a native bertfast model on CUDA;
    write the tuned-config cache; return one row per bucket (tokens, sequences, capture s, replay ms)."""
    from .graphs import select_bucket
    from .modeling import graph_runner

    if not torch.cuda.is_available():
        raise RuntimeError("bertfast tune needs a CUDA device: it autotunes and captures on the GPU")
    model = model.to(device).eval().set_backend("auto").set_cuda_graphs(True)
    dev = torch.device(device)
    runner = graph_runner(model, model.spec, True, dev)
    rows = []
    g = torch.Generator().manual_seed(0)
    for tokens in power_of_two_buckets(max_tokens):
        n = min(seq_len, tokens, model.config.max_position_embeddings)
        lengths = [n] * max(1, tokens // n)
        cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=dev)
        ids = torch.randint(1, model.config.vocab_size, (int(cu[-1]),), generator=g).to(dev)
        key = select_bucket(ids.numel(), len(lengths), runner.token_buckets, runner.seq_buckets)
        with torch.inference_mode():
            model.forward_packed(ids, cu)  # autotunes (warm-up) and captures this bucket
            ms = _time_ms(lambda: model.forward_packed(ids, cu))
        rows.append({
            "tokens": tokens,
            "bucket": f"{key[0]}x{key[1]}" if key else "eager",
            "capture_s": round(runner.stats.captured.get(key, float("nan")), 3) if key else None,
            "ms": round(ms, 4),
            "us_per_token": round(1000 * ms / ids.numel(), 3),
        })  # fmt: skip
    cache = device_cache(dev)
    cache.load()
    harvest(cache)
    rows.append({"cache": str(cache.save()), "graph_memory_mb": round(runner.stats.pool_bytes / 2**20, 1)})
    return rows
