"""pytest-benchmark set-up for benchmarks/ (`pytest benchmarks/ --benchmark-json=out.json`).

GPU timings: pytest-benchmark's own timer sees each call followed by torch.cuda.synchronize(), and
every benchmark also stores the CUDA-event median (ms) in extra_info["cuda_event_median_ms"].
Input sets are rotated so that no call reuses the previous call's tensors.
"""

from __future__ import annotations

import itertools
import os
import statistics

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")


def pytest_collection_modifyitems(config, items):
    # The Triton interpreter's timings mean nothing: kernel benchmarks need a real GPU.
    skip = pytest.mark.skip(reason="needs a CUDA device (interpreter timings are meaningless)")
    for item in items:
        if "gpu" in item.keywords and not CUDA:
            item.add_marker(skip)


def run_benchmark(benchmark, fn, inputs: list, rounds: int | None = None, warmup: int = 5) -> None:
    """Time fn(*inputs[i]) with the input sets rotated: CUDA events and a synchronized wall timer on
    GPU, pytest-benchmark's timer alone on CPU."""
    cycle = itertools.cycle(inputs)
    for _ in range(warmup):
        fn(*next(cycle))
    if CUDA:
        torch.cuda.synchronize()
        times = []
        for _ in range(max(20, rounds or 50)):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            args = next(cycle)
            torch.cuda.synchronize()
            start.record()
            fn(*args)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        benchmark.extra_info["cuda_event_median_ms"] = statistics.median(times)

        def call():
            fn(*next(cycle))
            torch.cuda.synchronize()
    else:

        def call():
            fn(*next(cycle))

    with torch.inference_mode():
        benchmark.pedantic(call, rounds=rounds or (100 if CUDA else 5), warmup_rounds=1, iterations=1)


@pytest.fixture
def bench_run():
    return run_benchmark
