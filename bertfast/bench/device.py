"""The device: its name and versions, how a call is timed, and its two ceilings (matrix rate,
memory bandwidth), measured on the same GEMM path the engines use."""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .._dtypes import dtype_name, parse_dtype  # noqa: F401  (the package's one dtype parser, re-exported)

OOM = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError


def reason(ex: BaseException) -> str:
    """One line for a report: the exception's type and the first line of its message."""
    text = str(ex).strip()
    return f"{type(ex).__name__}: {text.splitlines()[0][:300]}" if text else type(ex).__name__


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def driver_version(device: torch.device) -> str | None:
    if device.type != "cuda":
        return None
    if shutil.which("nvidia-smi"):
        try:
            out = (
                subprocess.run(
                    ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                    capture_output=True,
                    text=True,
                    timeout=20,
                    check=True,
                )
                .stdout.strip()
                .splitlines()
            )
            if out:
                return out[0].strip()
        except Exception:
            pass
    return f"cuda {torch.version.cuda} (torch build; nvidia-smi unavailable)"


def versions() -> dict:
    out = {"torch": torch.__version__}
    for name in ("triton", "transformers"):
        try:
            out[name] = __import__(name).__version__
        except Exception as e:
            out[name] = f"unavailable ({type(e).__name__})"
    return out


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "device"


# ----------------------------------------------------------------------------- timing
def time_back_to_back(fn: Callable[[], Any], device: torch.device, reps: int) -> list[float]:
    """ms per call of `reps` calls issued back to back.

    CUDA: an event is recorded before each call and one after the last, with no synchronize in
    between; call i's time is the interval between events i and i + 1, i.e. the device's time per call
    in a steady stream (the host's time where the host is the slower side). CPU: perf_counter per call.
    """
    if device.type != "cuda":
        out = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
        return out
    events = [torch.cuda.Event(enable_timing=True) for _ in range(reps + 1)]
    torch.cuda.synchronize(device)
    for i in range(reps):
        events[i].record()
        fn()
    events[reps].record()
    events[reps].synchronize()
    return [events[i].elapsed_time(events[i + 1]) for i in range(reps)]


def time_latency(fn: Callable[[], Any], device: torch.device, reps: int) -> list[float]:
    """ms of wall time of one call followed by a synchronize, starting from an idle device."""
    out = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


# ----------------------------------------------------------------------------- ceilings
def _gemm_shapes(cuda: bool, quick: bool) -> list[tuple[int, int, int]]:
    """(M, N, K) of the ceiling GEMMs: a large square one, and BERT-base's FFN1 at many tokens."""
    if cuda:
        return [(8192, 8192, 8192), (16384, 3072, 768)] if not quick else [(4096, 4096, 4096), (8192, 3072, 768)]
    return [(1024, 1024, 1024), (1024, 1536, 384)] if quick else [(2048, 2048, 2048), (2048, 3072, 768)]


def linear_tflops(
    device: torch.device, dtype: torch.dtype, shape: tuple[int, int, int], reps: int, rounds: int
) -> float:
    """The best TFLOP/s of F.linear(x (M, K), w (N, K)) over `rounds` rounds of `reps` calls each."""
    M, N, K = shape
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(M, K, device=device, dtype=dtype, generator=g)  # (M, K)
    w = torch.randn(N, K, device=device, dtype=dtype, generator=g)  # (N, K), as nn.Linear stores it
    for _ in range(2):
        F.linear(x, w)
    best_ms = min(min(time_back_to_back(lambda: F.linear(x, w), device, reps)) for _ in range(rounds))
    return 2 * M * N * K / (best_ms / 1e3) / 1e12


def measure_peaks(device: torch.device, dtypes: Sequence[torch.dtype], quick: bool) -> dict:
    """The ceilings: the best TFLOP/s of F.linear per dtype (several shapes and rounds), and a device
    copy's TB/s (read + write)."""
    cuda = device.type == "cuda"
    reps, rounds = (20, 3) if cuda else (4, 3)
    shapes = _gemm_shapes(cuda, quick)
    by_dtype, best_shape = {}, {}
    for dt in dtypes:
        rates = {s: linear_tflops(device, dt, s, reps, rounds) for s in shapes}
        best = max(rates, key=rates.get)
        by_dtype[dtype_name(dt)], best_shape[dtype_name(dt)] = rates[best], "x".join(map(str, best))
    nbytes = (1 << 30) if cuda else (64 << 20)
    src = torch.randn(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    ms = min(time_back_to_back(lambda: dst.copy_(src), device, reps))
    src = dst = None  # free the buffers before the models arrive
    first = dtype_name(dtypes[0])
    return dict(
        matmul_tflops=by_dtype[first],
        matmul_tflops_by_dtype=by_dtype,
        matmul_op="F.linear",
        matmul_shape_by_dtype=best_shape,  # MxNxK of the best run
        matmul_n=int(shapes[0][0]),
        copy_tbps=2 * nbytes / (ms / 1e3) / 1e12,
        copy_bytes=nbytes,
        raised={},
    )


def raise_ceilings(peak: dict, rows: list[dict]) -> dict:
    """Where a row's useful TFLOP/s exceeds its dtype's measured ceiling, raise the ceiling to the best
    measured figure (recorded under peak["raised"]) and recompute every row's frac_of_peak; nothing
    is clamped. Returns peak (changed in place, as are the rows)."""
    by_dtype = peak["matmul_tflops_by_dtype"]
    for dt in {r["dtype"] for r in rows}:
        if dt not in by_dtype:
            continue
        best = max((r for r in rows if r["dtype"] == dt), key=lambda r: r["tflops"])
        if best["tflops"] > by_dtype[dt]:
            peak["raised"][dt] = dict(
                measured=by_dtype[dt],
                raised_to=best["tflops"],
                by=f"{best['model']} {best['engine']} {best['lengths']} b{best['batch']} s{best['seq']}",
            )
            by_dtype[dt] = best["tflops"]
            if dt == next(iter(by_dtype)):
                peak["matmul_tflops"] = by_dtype[dt]
    for r in rows:
        if r["dtype"] in by_dtype:
            r["frac_of_peak"] = r["tflops"] / by_dtype[r["dtype"]]
    return peak


def estimate_memory_bytes(dims: dict, batch: int, seq: int, dtype: torch.dtype, eager_attention: bool) -> int:
    """A generous upper bound on the activation memory of one padded forward (weights not included)."""
    es = torch.tensor([], dtype=dtype).element_size()
    H, I, N = dims["hidden"], dims["intermediate"], dims["heads"]
    tokens = batch * seq
    act = tokens * (6 * H + 2 * I) * es * 2  # a layer's live activations, doubled for the allocator
    attn = batch * N * seq * seq * 4 * (3 if eager_attention else 0)  # scores, probs, mask, fp32 worst case
    return act + attn
