"""Python cost per GEMM call on the model's hot path, with the GEMM itself stubbed out (CPU).

    python benchmarks/bench_host_overhead.py

Compares `kernels.gemm_dispatch.linear` (the checked public entry point) with `launch_linear` (what
the model's forward calls after validating its inputs once at the boundary). Only the Python around
the launch is timed: on a GPU, add Triton's own launch cost (or nothing, under a CUDA graph).
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TRITON_INTERPRET", "1")  # importable without a GPU; nothing is launched anyway

import torch  # noqa: E402

from bertfast.kernels import gemm_dispatch, gemm_impls  # noqa: E402


def per_call_us(fn, n: int = 20000) -> float:
    for _ in range(n // 10):
        fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return 1e6 * (time.perf_counter() - t0) / n


def main() -> None:
    for impl in gemm_impls.IMPLEMENTATIONS.values():  # stub the GEMM: only the Python around it is timed
        impl.launch = lambda *args, **kwargs: None
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(16, 768, generator=g), torch.randn(2304, 768, generator=g)
    b, r = torch.randn(2304, generator=g), torch.randn(16, 2304, generator=g)
    checked = per_call_us(lambda: gemm_dispatch.linear(x, w, b, None, r))
    trusted = per_call_us(lambda: gemm_dispatch.launch_linear(x, w, b, "", r))
    print(f"gemm_dispatch.linear (checked): {checked:.1f} us per call")
    print(f"gemm_dispatch.launch_linear:    {trusted:.1f} us per call")


if __name__ == "__main__":
    main()
