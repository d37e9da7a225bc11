"""`bertfast serve` against the server a user would write (benchmarks/st_server.py: FastAPI +
sentence-transformers, one encode() per request), in one run, on the same sentences.

    python benchmarks/bench_serve.py [--device cpu] [--seconds 8] [--out benchmarks/results]

Each server runs alone (started, warmed, measured, stopped), so the two never share the CPU. For each
server, 1, 8, 32 and 128 concurrent clients (one aiohttp session, keep-alive) send OpenAI
/v1/embeddings requests of 1 or of 32 sentences back to back for --seconds after a warm-up; the
report gives requests/s, sentences/s and the p50 / p99 latency of each cell, bertfast's throughput as
a multiple of the peer's, and the p50 at one client against an in-process `encode()` of one sentence
(the same sentences, the same machine, measured first). JSON and Markdown go to --out as
serve-<device>-<date>.json / .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CONCURRENCY = (1, 8, 32, 128)
SIZES = (1, 32)
TARGETS = {"throughput_x_at_32_single": 4.0, "p50_1_client_vs_encode": 1.5}


def _int_list(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url} was not ready in {timeout} s")


async def drive(url: str, sentences: list[str], size: int, clients: int, seconds: float, warmup_s: float) -> dict:
    """`clients` loops posting `size` sentences each, back to back. Throughput counts the requests that
    finish inside the measured window; their latencies are the percentiles."""
    import aiohttp

    latencies: list[float] = []
    errors = 0
    rng = np.random.default_rng(size * 1000 + clients)
    start = time.perf_counter()
    measure_from, stop_at = start + warmup_s, start + warmup_s + seconds

    async def client(session, k: int):
        nonlocal errors
        i = int(rng.integers(len(sentences)))
        while time.perf_counter() < stop_at:
            batch = [sentences[(i + j) % len(sentences)] for j in range(size)]
            i += size + k
            t0 = time.perf_counter()
            async with session.post(url + "/v1/embeddings", json={"input": batch}) as r:
                body = await r.read()
                ok = r.status == 200
            t1 = time.perf_counter()
            if not ok:
                errors += 1
            elif measure_from <= t1 <= stop_at:
                latencies.append(t1 - t0)
            del body

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:
        await asyncio.gather(*(client(session, k) for k in range(clients)))
    lat = np.array(latencies) * 1000
    n = len(latencies)
    return {
        "clients": clients,
        "sentences_per_request": size,
        "requests": n,
        "errors": errors,
        "requests_per_s": n / seconds,
        "sentences_per_s": n * size / seconds,
        "p50_ms": float(np.percentile(lat, 50)) if n else None,
        "p99_ms": float(np.percentile(lat, 99)) if n else None,
    }


def measure_server(name: str, cmd: list[str], port: int, sentences, args) -> list[dict]:
    log = tempfile.NamedTemporaryFile("w+", suffix=f"-{name}.log", delete=False)
    env = dict(os.environ)
    if args.torch_threads:
        env["OMP_NUM_THREADS"] = str(args.torch_threads)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    rows = []
    try:
        wait_ready(url, proc)
        for size in args.sizes:
            for clients in args.clients:
                row = asyncio.run(drive(url, sentences, size, clients, args.seconds, args.warmup))
                row["server"] = name
                rows.append(row)
                print(
                    f"{name:>9} size={size:>2} clients={clients:>3}: {row['requests_per_s']:8.1f} req/s "
                    f"{row['sentences_per_s']:8.1f} sent/s p50={row['p50_ms'] or float('nan'):8.2f} ms "
                    f"p99={row['p99_ms'] or float('nan'):8.2f} ms errors={row['errors']}",
                    flush=True,
                )
    finally:
        proc.terminate()
        proc.wait(120)
        log.close()
    return rows


def in_process_encode_ms(sentences: list[str], device: str, repeats: int, threads: int | None) -> float:
    """p50 of one synchronous SentenceEncoder.encode() of one sentence: the floor a server adds HTTP to."""
    import torch

    from bertfast.sentence import SentenceEncoder

    if threads:
        torch.set_num_threads(threads)
    enc = SentenceEncoder.from_pretrained(device=device)
    times = []
    for i in range(repeats + 10):
        t0 = time.perf_counter()
        enc.encode(sentences[i % len(sentences)])
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= 10:
            times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version()}


def markdown(report: dict) -> str:
    lines = [
        f"# bertfast serve vs FastAPI + sentence-transformers ({report['device']}, {report['date']})",
        "",
        f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores; load average "
        f"{report['load_average_start']} at the start, {report['load_average_end']} at the end. "
        f"{report['seconds']} s per cell after {report['warmup_s']} s of warm-up; MiniLM-L6, fp32; torch threads "
        f"{report['torch_threads'] or 'default'} in both servers and the in-process encode(); "
        f"bertfast serve options: `{report['serve_args'] or '(defaults)'}`.",
        "",
        "| sentences/request | clients | bertfast req/s | peer req/s | x | bertfast p50 / p99 ms | peer p50 / p99 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ours = {(r["sentences_per_request"], r["clients"]): r for r in report["results"] if r["server"] == "bertfast"}
    peer = {(r["sentences_per_request"], r["clients"]): r for r in report["results"] if r["server"] == "st-fastapi"}
    fmt = lambda v: "n/a" if v is None else f"{v:.1f}"
    for key, a in ours.items():
        b = peer.get(key, {})
        x = a["requests_per_s"] / b["requests_per_s"] if b.get("requests_per_s") else None
        lines.append(
            f"| {key[0]} | {key[1]} | {fmt(a['requests_per_s'])} | {fmt(b.get('requests_per_s'))} | "
            f"{'n/a' if x is None else f'{x:.2f}'} | {fmt(a['p50_ms'])} / {fmt(a['p99_ms'])} | "
            f"{fmt(b.get('p50_ms'))} / {fmt(b.get('p99_ms'))} |"
        )
    t = report["targets"]
    lines += [
        "",
        f"- Throughput at 32 single-sentence clients: {t['throughput_x_at_32_single']['measured']:.2f}x the peer's "
        f"(target >= {t['throughput_x_at_32_single']['target']}x).",
        f"- p50 at 1 client: {t['p50_1_client_vs_encode']['server_p50_ms']:.2f} ms against "
        f"{t['p50_1_client_vs_encode']['encode_ms']:.2f} ms for an in-process encode() of one sentence: "
        f"{t['p50_1_client_vs_encode']['measured']:.2f}x (target <= {t['p50_1_client_vs_encode']['target']}x).",
        "",
        f"Command: `{report['command']}`",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="bertfast serve against FastAPI + sentence-transformers")
    p.add_argument("--device", default="cpu", help="cpu or cuda (both servers)")
    p.add_argument("--seconds", type=float, default=8.0, help="measured seconds per cell (default: 8)")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each cell (default: 2)")
    p.add_argument("--out", default=str(HERE / "results"), help="folder for the JSON and Markdown report")
    p.add_argument("--clients", type=_int_list, default=CONCURRENCY, help="concurrent clients (default: 1,8,32,128)")
    p.add_argument("--sizes", type=_int_list, default=SIZES, help="sentences per request (default: 1,32)")
    p.add_argument(
        "--serve-args",
        default="",
        help="more options for bertfast serve, e.g. '--max-batch-tokens 2048' (a CPU's latency wants smaller "
        "batches than TEI's GPU default)",
    )
    p.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch CPU threads for both servers and the in-process encode() (default: torch's own); "
        "on a CPU shared with other work, 1 avoids OpenMP threads waiting on each other",
    )
    args = p.parse_args(argv)

    from bertfast.bench import sentences as bench_sentences

    sentences = bench_sentences()
    load_start = os.getloadavg()
    encode_ms = in_process_encode_ms(sentences, args.device, 200, args.torch_threads)
    print(f"in-process encode() of one sentence: p50 {encode_ms:.2f} ms", flush=True)
    results = []
    port = free_port()
    bertfast_cmd = [sys.executable, "-m", "bertfast", "serve", "--port", str(port), "--device", args.device]
    bertfast_cmd += args.serve_args.split()
    results += measure_server("bertfast", bertfast_cmd, port, sentences, args)
    port = free_port()
    peer_cmd = [sys.executable, str(HERE / "st_server.py"), "--port", str(port), "--device", args.device]
    results += measure_server("st-fastapi", peer_cmd, port, sentences, args)

    cells = {(r["server"], r["sentences_per_request"], r["clients"]): r for r in results}

    def cell(server, size, clients):
        return cells[(server, size, clients)]

    if not {("bertfast", 1, 32), ("st-fastapi", 1, 32), ("bertfast", 1, 1)} <= set(cells):
        raise SystemExit("the targets need --sizes with 1 and --clients with 1 and 32")
    x32 = cell("bertfast", 1, 32)["requests_per_s"] / max(cell("st-fastapi", 1, 32)["requests_per_s"], 1e-9)
    p50 = cell("bertfast", 1, 1)["p50_ms"]
    date = time.strftime("%Y-%m-%d-%H%M")
    report = {
        "device": args.device,
        "date": date,
        "machine": machine(),
        "load_average_start": [round(v, 2) for v in load_start],
        "load_average_end": [round(v, 2) for v in os.getloadavg()],
        "seconds": args.seconds,
        "torch_threads": args.torch_threads,
        "serve_args": args.serve_args,
        "warmup_s": args.warmup,
        "command": shlex.join(["python", "benchmarks/bench_serve.py", *(argv if argv is not None else sys.argv[1:])]),
        "in_process_encode_one_ms": encode_ms,
        "targets": {
            "throughput_x_at_32_single": {"measured": x32, "target": TARGETS["throughput_x_at_32_single"]},
            "p50_1_client_vs_encode": {
                "measured": p50 / encode_ms,
                "server_p50_ms": p50,
                "encode_ms": encode_ms,
                "target": TARGETS["p50_1_client_vs_encode"],
            },
        },
        "results": results,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"serve-{args.device}-{date}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    stem.with_suffix(".md").write_text(markdown(report), encoding="utf-8")
    print(f"wrote {stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
