"""Where an engine's time goes: torch.profiler's kernels (CUDA) or operators (CPU), each classified
by name into a part (GEMMs, attention, norms, other), summed per forward, beside each part's floor.

On CUDA the parts are GPU kernel times (memcpy/memset included under "other"); on the CPU they are
operators' self times (each op's time minus its children's, so nothing is counted twice). Batched
matmuls of eager attention (QKᵀ, PV through cuBLAS or aten::bmm) count as GEMMs: the name is all
the classifier sees.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch

from .floors import PARTS

# Checked in this order: "fmha_cutlassF" is attention before it is a cutlass GEMM.
_PATTERNS = (
    ("attention", re.compile(r"flash|fmha|cudnn|attention|attn|sdpa", re.I)),
    ("gemm", re.compile(r"gemm|gemv|cublas|cutlass|xmma|nvjet|_linear|aten::linear|addmm|aten::mm$|bmm|matmul", re.I)),
    ("norms", re.compile(r"layer_norm|layernorm", re.I)),
)


def classify(kernel_name: str) -> str:
    """The part a kernel or operator belongs to: "gemm", "attention", "norms" or "other"."""
    for part, pattern in _PATTERNS:
        if pattern.search(kernel_name):
            return part
    return "other"


def _timed_items(prof, device: torch.device) -> list[tuple[str, float]]:
    """(name, us) of what the profile saw: CUDA kernels on CUDA, CPU operators' self time elsewhere."""
    from torch.autograd import DeviceType

    items = []
    if device.type == "cuda":
        for ev in prof.events():
            if ev.device_type == DeviceType.CUDA:
                items.append((ev.name, float(ev.time_range.elapsed_us())))
    else:
        for ev in prof.key_averages():
            if ev.self_cpu_time_total > 0:
                items.append((ev.key, float(ev.self_cpu_time_total)))
    return items


def profile_forward(fn: Callable[[], Any], device: torch.device, calls: int = 5) -> dict:
    """Run fn() `calls` times under torch.profiler (after one warm-up call); returns ms per call by
    part, their total (the sum of the parts), the kernel count per call, and the five costliest names."""
    from torch.profiler import ProfilerActivity, profile

    if calls < 1:
        raise ValueError(f"calls must be >= 1, got {calls}")
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(calls):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    items = _timed_items(prof, device)
    parts = dict.fromkeys(PARTS, 0.0)
    by_name: dict[str, float] = defaultdict(float)
    for name, us in items:
        parts[classify(name)] += us / 1e3 / calls
        by_name[name] += us / 1e3 / calls
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:5]
    return dict(
        parts_ms=parts,
        total_ms=sum(parts.values()),
        n_kernels=len(items) / calls if device.type == "cuda" else None,
        source="cuda kernels" if device.type == "cuda" else "cpu operators (self time)",
        top=[dict(name=n[:120], ms=ms, part=classify(n)) for n, ms in top],
    )


def against_floors(parts_ms: dict[str, float], floors_ms: dict[str, float]) -> dict[str, float | None]:
    """Each part's time over its floor (None where the floor is 0: 'other' has none)."""
    return {p: (parts_ms[p] / floors_ms[p] if floors_ms.get(p) else None) for p in PARTS}
