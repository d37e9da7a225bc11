"""The runtime section of a report: each figure measured in a fresh Python process.

    python -m bertfast.bench.runtime <probe> --model bert-base --dtype float16 --device cuda

prints one JSON object on its last line of stdout. Probes (GPU-only ones answer {"skipped": "needs
CUDA"} elsewhere; `threads` runs on the CPU too, through the torch path):

  cold_start   load + optimize + first call at 1 x 128 (the parent points BERTFAST_CACHE_DIR and
               TRITON_CACHE_DIR at empty directories and adds the process's start-up and imports)
  new_bucket   after warm-up at 1 x 128, the first call of each of a few new shapes
  replay_rate  400 seeded random batches (1-1024 sequences, 1-512 tokens); graph_stats() after them
  host_us      host time per call with CUDA graphs on and off (METHOD below)
  threads      4 threads x 40 calls on one model against single-threaded results (on CUDA each
               thread on its own stream)

runtime_section() runs them all and returns the JSON's "runtime" object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import torch

from .device import dtype_name, parse_dtype, reason, sync
from .models import build_hf, use_minilm_dir

PROBES = ("cold_start", "threads", "host_us", "new_bucket", "replay_rate")  # the order they run in
GPU_ONLY = ("cold_start", "new_bucket", "replay_rate", "host_us")
HOST_METHOD = (
    "host_us_per_call: after a synchronize (empty queue), the wall time of model(...) until it returns, "
    "without a synchronize after it: one forward enqueues far fewer launches than the queue holds, so "
    "the call returns when the host's work is done; median of 50 calls at 1 x 128 after warm-up. The "
    "one host sync inside a bertfast call waits only for that call's own few small copies."
)


# ----------------------------------------------------------------------------- helpers
def load_model(model_name: str, dtype: torch.dtype, device: torch.device, cuda_graphs: bool = True):
    """transformers' BertModel (SDPA) for `model_name`, on `device` in `dtype`, optimized by bertfast."""
    import bertfast

    m = build_hf(model_name, "sdpa").to(device=device, dtype=dtype)
    return bertfast.optimize(m, cuda_graphs=cuda_graphs and device.type == "cuda")


def random_batch(batch: int, seq: int, vocab: int, g: torch.Generator, device: torch.device, full: bool = False):
    """(ids (B, S), mask (B, S)): right-padded rows of random lengths in [1, seq] (all `seq` if full)."""
    lengths = torch.full((batch,), seq) if full else torch.randint(1, seq + 1, (batch,), generator=g)
    lengths[0] = seq  # the batch is as long as asked
    ids = torch.randint(min(1000, vocab // 2), vocab, (batch, seq), generator=g)  # (B, S), no special tokens
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()  # (B, S)
    return (ids * mask).to(device), mask.to(device)


def _forward(model, ids, mask) -> torch.Tensor:
    return model(input_ids=ids, attention_mask=mask).last_hidden_state


def _stats_total(model) -> dict:
    """graph_stats(model) summed over its encoders (counters and memory)."""
    import bertfast

    keys = ("calls", "replays", "hits", "misses", "evictions", "fallbacks", "memory_mb")
    total = dict.fromkeys(keys, 0)
    per = bertfast.graph_stats(model)
    for stats in per.values():
        for k in keys:
            total[k] += stats.get(k) or 0
    total["buckets"] = sum(len(s.get("buckets") or {}) for s in per.values())
    return total


# ----------------------------------------------------------------------------- probes
def probe_cold_start(model_name: str, dtype: torch.dtype, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    model = load_model(model_name, dtype, device)
    sync(device)
    t1 = time.perf_counter()
    ids, mask = random_batch(1, 128, model.config.vocab_size, g, device, full=True)
    with torch.inference_mode():
        _forward(model, ids, mask)
    sync(device)
    t2 = time.perf_counter()
    return dict(load_s=t1 - t0, first_call_s=t2 - t1, shape="1x128")


def probe_new_bucket(model_name: str, dtype: torch.dtype, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(1)
    model = load_model(model_name, dtype, device)
    vocab = model.config.vocab_size
    first, second = {}, {}
    with torch.inference_mode():
        for _ in range(3):  # warm-up at 1 x 128
            _forward(model, *random_batch(1, 128, vocab, g, device, full=True))
        for b, s in ((8, 77), (3, 200), (64, 33), (32, 128)):
            inputs = random_batch(b, s, vocab, g, device)
            for seen in (first, second):
                sync(device)
                t0 = time.perf_counter()
                _forward(model, *inputs)
                sync(device)
                seen[f"{b}x{s}"] = time.perf_counter() - t0
    return dict(
        first_call_s=first,
        second_call_s=second,
        median_s=statistics.median(first.values()),
        max_s=max(first.values()),
        graph_stats=_stats_total(model),
    )


def probe_replay_rate(model_name: str, dtype: torch.dtype, device: torch.device, n_calls: int = 400) -> dict:
    g = torch.Generator().manual_seed(2)
    model = load_model(model_name, dtype, device)
    vocab, max_len = model.config.vocab_size, min(512, model.config.max_position_embeddings)
    shapes = [
        (int(torch.randint(1, 1025, (1,), generator=g)), int(torch.randint(1, max_len + 1, (1,), generator=g)))
        for _ in range(n_calls)
    ]
    reserved = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for k, (b, s) in enumerate(shapes):
            _forward(model, *random_batch(b, s, vocab, g, device))
            if k in (n_calls // 4, n_calls - 1):
                sync(device)
                reserved.append(torch.cuda.memory_reserved(device) / 2**20)
    stats = _stats_total(model)
    rate = (stats["calls"] - stats["fallbacks"]) / stats["calls"] if stats["calls"] else None
    return dict(
        rate=rate,
        n_calls=n_calls,
        wall_s=time.perf_counter() - t0,
        graph_stats=stats,
        reserved_mb_after_quarter=reserved[0],
        reserved_mb_at_end=reserved[-1],
    )


def _host_us(model, ids, mask, device: torch.device, calls: int = 50) -> tuple[float, float]:
    """(median host µs of a call without synchronize, median device ms per call back to back)."""
    from .device import time_back_to_back

    for _ in range(5):
        _forward(model, ids, mask)
    host = []
    for _ in range(calls):
        sync(device)
        t0 = time.perf_counter()
        _forward(model, ids, mask)
        host.append((time.perf_counter() - t0) * 1e6)
    sync(device)
    return statistics.median(host), statistics.median(
        time_back_to_back(lambda: _forward(model, ids, mask), device, calls)
    )


def probe_host_us(model_name: str, dtype: torch.dtype, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(3)
    out = {}
    for graphs in (True, False):
        model = load_model(model_name, dtype, device, cuda_graphs=graphs)
        ids, mask = random_batch(1, 128, model.config.vocab_size, g, device, full=True)
        with torch.inference_mode():
            host, dev_ms = _host_us(model, ids, mask, device)
        key = "graphs_on" if graphs else "graphs_off"
        out[key], out[f"{key}_ms_per_call_back_to_back"] = host, dev_ms
        del model
    out["method"] = HOST_METHOD
    return out


# Shapes of the thread probe's batches: odd sizes, several buckets.
THREAD_SHAPES = ((1, 16), (2, 33), (4, 64), (3, 128), (8, 20), (5, 77), (1, 128), (6, 50))


def probe_threads(
    model_name: str, dtype: torch.dtype, device: torch.device, threads: int = 4, calls: int = 160, model=None
) -> dict:
    """`threads` threads share one optimized model and make `calls` calls in all; each output (real
    positions) is compared with the single-threaded output of the same batch. A mismatch is a call
    whose max abs error exceeds the dtype's tolerance, or that raised. On CUDA each thread issues its
    calls on a stream of its own, as a server's workers do, and reads its result after syncing it."""
    if threads < 1 or calls < threads:
        raise ValueError(f"need threads >= 1 and calls >= threads, got threads={threads}, calls={calls}")
    g = torch.Generator().manual_seed(4)
    model = model if model is not None else load_model(model_name, dtype, device)
    max_len = model.config.max_position_embeddings
    batches = [random_batch(b, min(s, max_len), model.config.vocab_size, g, device) for b, s in THREAD_SHAPES]
    tol = {torch.float32: 1e-4}.get(dtype, 1e-2)
    with torch.inference_mode():
        for ids, mask in batches:  # warm-up: compile, capture
            _forward(model, ids, mask)
        ref = [_forward(model, ids, mask)[mask.bool()].float().clone() for ids, mask in batches]
    sync(device)
    errors: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    streams = [torch.cuda.Stream(device) for _ in range(threads)] if device.type == "cuda" else None

    def worker(t: int) -> None:
        ctx = torch.cuda.stream(streams[t]) if streams else contextlib.nullcontext()
        start.wait()
        for j in range(calls // threads):
            k = (t * 3 + j) % len(batches)
            ids, mask = batches[k]
            try:
                with torch.inference_mode(), ctx:
                    out = _forward(model, ids, mask)[mask.bool()].float()
                    err = (out - ref[k]).abs().max().item()  # .item() syncs this thread's stream
            except Exception as ex:  # a crash under threads is a mismatch too
                with lock:
                    failures.append(reason(ex))
                continue
            with lock:
                errors.append(err)

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    mismatches = sum(e > tol for e in errors) + len(failures)
    return dict(
        threads=threads,
        streams=len(streams) if streams else 0,
        calls=len(errors) + len(failures),
        mismatches=mismatches,
        max_abs_err=max(errors, default=None),
        tolerance=tol,
        failures=failures[:3],
    )


_RUN = {
    "cold_start": probe_cold_start,
    "new_bucket": probe_new_bucket,
    "replay_rate": probe_replay_rate,
    "host_us": probe_host_us,
    "threads": probe_threads,
}


def run_probe(probe: str, model_name: str, dtype: torch.dtype, device: torch.device) -> dict:
    """One probe in this process (the CLI below runs it in a fresh one)."""
    if probe not in _RUN:
        raise ValueError(f"probe: unknown probe {probe!r}; one of {PROBES}")
    if probe in GPU_ONLY and device.type != "cuda":
        return {"skipped": "needs CUDA"}
    return _RUN[probe](model_name, dtype, device)


# ----------------------------------------------------------------------------- the parent side
def run_in_fresh_process(
    probe: str, model_name: str, dtype: str, device: str, minilm_dir: str | None, timeout_s: float
) -> tuple[dict, float]:
    """Run one probe in a new Python process; returns (its JSON, wall s). The cold start gets empty
    kernel caches (bertfast's, Triton's, Inductor's); the other probes share this machine's caches,
    as a server restarted on it would, so that each measures its own figure rather than compiles."""
    with tempfile.TemporaryDirectory(prefix="bertfast-probe-") as tmp:
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        if probe == "cold_start":
            env.update(
                BERTFAST_CACHE_DIR=os.path.join(tmp, "bertfast"),
                TRITON_CACHE_DIR=os.path.join(tmp, "triton"),
                TORCHINDUCTOR_CACHE_DIR=os.path.join(tmp, "inductor"),
            )
        cmd = [
            sys.executable,
            "-m",
            "bertfast.bench.runtime",
            probe,
            "--model",
            model_name,
            "--dtype",
            dtype,
            "--device",
            device,
        ] + (["--minilm-dir", minilm_dir] if minilm_dir else [])
        t0 = time.perf_counter()
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return {"skipped": f"timed out after {timeout_s:.0f} s"}, time.perf_counter() - t0
        wall = time.perf_counter() - t0
    lines = [ln for ln in done.stdout.splitlines() if ln.strip().startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return {"skipped": f"probe failed (exit {done.returncode}): {tail}"}, wall
    return json.loads(lines[-1]), wall


def runtime_section(
    device: str,
    dtype: str,
    model_name: str = "bert-base",
    replay_model: str = "minilm",
    minilm_dir: str | None = None,
    timeout_s: float = 120.0,
    probes: tuple[str, ...] = PROBES,
    budget_s: float | None = None,
) -> dict:
    """The report's "runtime" object: headline figures, each probe's full answer under "probes".

    Each probe may take `timeout_s`; with `budget_s`, all of them together at most that (a probe
    gets what is left, and one with under 5 s left is reported as not run)."""
    if budget_s is not None and budget_s <= 0:
        raise ValueError(f"budget_s must be > 0 seconds, got {budget_s}")
    deadline = None if budget_s is None else time.monotonic() + budget_s
    got = {}
    for probe in probes:
        name = replay_model if probe in ("replay_rate", "threads") else model_name
        left = timeout_s if deadline is None else min(timeout_s, deadline - time.monotonic())
        if probe in GPU_ONLY and device != "cuda":
            got[probe] = ({"skipped": "needs CUDA"}, None)
        elif left < 5:
            got[probe] = ({"skipped": f"not run: the runtime budget of {budget_s:.0f} s was spent"}, None)
        else:
            got[probe] = run_in_fresh_process(probe, name, dtype, device, minilm_dir, left)

    def headline(probe: str, key: str):
        answer, _ = got.get(probe, ({"skipped": "not run"}, None))
        return {"skipped": answer["skipped"]} if "skipped" in answer else answer.get(key)

    cold, cold_wall = got.get("cold_start", ({"skipped": "not run"}, None))
    host = got.get("host_us", ({"skipped": "not run"}, None))[0]
    threads = got.get("threads", ({"skipped": "not run"}, None))[0]
    replay = got.get("replay_rate", ({"skipped": "not run"}, None))[0]
    return dict(
        model=model_name,
        replay_model=replay_model,
        dtype=dtype,
        device=device,
        cold_start_s=cold_wall if "skipped" not in cold else {"skipped": cold["skipped"]},
        new_bucket_s=headline("new_bucket", "max_s"),
        replay_rate=headline("replay_rate", "rate"),
        reserved_mb=replay
        if "skipped" in replay
        else {"after_quarter": replay["reserved_mb_after_quarter"], "at_end": replay["reserved_mb_at_end"]},
        host_us_per_call=host
        if "skipped" in host
        else {"graphs_on": host["graphs_on"], "graphs_off": host["graphs_off"]},
        threads_ok=threads
        if "skipped" in threads
        else {k: threads.get(k) for k in ("threads", "streams", "calls", "mismatches", "max_abs_err")},
        method=(
            "cold_start_s: wall time of a fresh process (interpreter start, imports, load, optimize, first "
            "call at 1 x 128) with empty bertfast, Triton and Inductor caches. new_bucket_s: the slowest first "
            "call of a new shape after warm-up. replay_rate: (calls - fallbacks) / calls from graph_stats() "
            f"after 400 random batches of {replay_model}; reserved_mb: torch.cuda.memory_reserved() after a quarter "
            "of them and at the end (flat when equal). " + HOST_METHOD
        ),
        probes={p: dict(answer, wall_s=wall) for p, (answer, wall) in got.items()},
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bertfast.bench.runtime",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("probe", choices=PROBES)
    p.add_argument("--model", default="bert-base", help="bert-base, bert-large, minilm (or tiny, for tests)")
    p.add_argument("--dtype", default="float16")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--minilm-dir", default=None)
    args = p.parse_args(argv)
    with use_minilm_dir(args.minilm_dir):
        answer = run_probe(args.probe, args.model, parse_dtype(args.dtype), torch.device(args.device))
    answer.update(probe=args.probe, model=args.model, dtype=dtype_name(parse_dtype(args.dtype)), device=args.device)
    print(json.dumps(answer, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
