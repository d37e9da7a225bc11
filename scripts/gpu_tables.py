"""The tables stage of scripts/gpu_check.sh: this GPU's GEMM choice table and kernel config table.

    python scripts/gpu_tables.py --out DIR --install          # on a GPU: measure, write, install
    TRITON_INTERPRET=1 python scripts/gpu_tables.py --device cpu --models tiny --m-buckets 16 64 --out DIR

GEMM choices: gemm_dispatch.measure_choices times each candidate implementation (cuBLAS + fused epilogue,
Triton, split-K, TMA) once per (M bucket, N, K, epilogue) of BERT-base, BERT-large and MiniLM, at the
token counts a bench run and a server meet, bench shapes first; the table file is rewritten after every
model, dtype and bucket, so a stage cut short keeps what it measured. Kernel configs: tuning.measure_configs
times each kernel's short candidate list per shape (no exhaustive autotune).

`--jobs N` (GPU) first runs every candidate once in N worker processes, so Triton's compiles fill its
disk cache in parallel; the timing pass then runs alone on the GPU. `--install` copies both files into
bertfast/kernels/tables/, where every later process on this machine loads them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import types
import warnings
from pathlib import Path

import torch

# Token counts (GEMM rows) the bench and a server meet, in the order they are measured: the bench's 1x128,
# 32x128 (and its U[16,128] lengths) and 32x512; sentence-transformers batches of short sentences (~1k,
# ~2k); then batch-1 requests and the rest. A cut stage keeps the first ones.
BENCH_BUCKETS = (128, 4096, 16384)
OTHER_BUCKETS = (1024, 2048, 512, 64, 16, 8192, 256, 32)
TABLES_DIR = Path(__file__).resolve().parent.parent / "bertfast" / "kernels" / "tables"


def model_config(name: str):
    from bertfast.bench.models import MODEL_CONFIGS, minilm_dir
    from bertfast.config import BertConfig

    return BertConfig.from_pretrained(minilm_dir()) if name == "minilm" else BertConfig.from_dict(MODEL_CONFIGS[name])


def gemm_shapes(model: str, buckets) -> list[tuple[int, int, int, str]]:
    """(M, N, K, epilogue) of the model's four GEMMs at each bucket."""
    from bertfast.runtime import model_gemm_shapes

    return model_gemm_shapes(types.SimpleNamespace(config=model_config(model)), list(buckets))


def plan(models, buckets, dtypes) -> list[tuple[str, torch.dtype, int, list]]:
    """(model, dtype, bucket, shapes) in the order they are measured: BERT-base fp16 at the bench's
    buckets, its bf16 row at 4096, then per dtype each bucket (in BENCH_BUCKETS + OTHER_BUCKETS order)
    for each model; each shape once."""
    seen, out = set(), []
    order = [b for b in BENCH_BUCKETS + OTHER_BUCKETS if b in buckets] + [
        b for b in buckets if b not in BENCH_BUCKETS + OTHER_BUCKETS
    ]

    def add(model, dtype, bucket):
        shapes = [s for s in gemm_shapes(model, [bucket]) if (s, dtype) not in seen]
        seen.update((s, dtype) for s in shapes)
        if shapes:
            out.append((model, dtype, bucket, shapes))

    if "bert-base" in models and torch.float16 in dtypes:
        for b in order:
            if b in BENCH_BUCKETS:
                add("bert-base", torch.float16, b)
    if "bert-base" in models and torch.bfloat16 in dtypes and 4096 in buckets:
        add("bert-base", torch.bfloat16, 4096)
    for dtype in dtypes:
        for b in order:
            for model in models:
                add(model, dtype, b)
    return out


def device_name(device: torch.device) -> str:
    from bertfast.bench.device import device_name as name

    return name(device)


def measure_gemm(work, device, reps: int, path: Path, deadline: float) -> dict:
    from bertfast.kernels import gemm_dispatch

    rows, done, cut = [], [], []
    for model, dtype, bucket, shapes in work:
        what = f"{model} {str(dtype).removeprefix('torch.')} M={bucket}"
        if time.monotonic() > deadline:
            cut.append(what)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a wrong candidate gets no time: seen in its row
            rows += gemm_dispatch.measure_choices(shapes, dtype, device, reps=reps)
        gemm_dispatch.write_table(rows, path, device_name=device_name(device))
        done.append(what)
    wins = {}
    for r in rows:
        wins[r["choice"]] = wins.get(r["choice"], 0) + 1
    return dict(path=str(path), rows=len(rows), measured=done, cut=cut, wins=wins)


def config_shapes(models, buckets) -> dict[str, list]:
    """What tuning.measure_configs measures: each model's GEMMs at the buckets, and its attention
    (head dim, sequence bucket) at the sequence lengths those buckets come from."""
    gemms, attn = [], []
    for m in models:
        cfg = model_config(m)
        gemms += [s for s in gemm_shapes(m, buckets) if s not in gemms]
        head_dim = cfg.hidden_size // cfg.num_attention_heads
        seqs = [s for s in (16, 32, 64, 128, 256, 512) if s <= max(buckets, default=0)]  # a batch's longest row
        attn += [(s, head_dim) for s in seqs if (s, head_dim) not in attn]
    return {"gemm": gemms, "attention": attn}


def measure_kernel_configs(models, buckets, dtypes, device, reps: int, path: Path) -> dict:
    """tuning.measure_configs' winners, written to `path` in the committed file's format."""
    from bertfast import tuning

    table = tuning.measure_configs(
        device, config_shapes(models, buckets), reps, dtypes=dtypes, path=path, device_name=device_name(device)
    )
    return dict(path=str(path), kernels={k: len(v.get("configs", {})) for k, v in table.get("kernels", {}).items()})


def warm(work, jobs: int, device: torch.device, timeout_s: float) -> dict:
    """Every candidate once (reps=1) in `jobs` worker processes: Triton compiles in parallel."""
    shards = [[] for _ in range(jobs)]
    flat = [(m, str(d).removeprefix("torch."), list(s)) for m, d, _, shapes in work for s in shapes]
    for i, item in enumerate(flat):
        shards[i % jobs].append(item)
    t0 = time.monotonic()
    procs = []
    for shard in shards:
        if shard:
            cmd = [sys.executable, __file__, "--warm-shard", json.dumps(shard), "--device", device.type, "--out", "-"]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    failed = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=max(1.0, timeout_s - (time.monotonic() - t0)))
            if p.returncode != 0:
                failed.append((err.strip().splitlines() or ["no output"])[-1][:200])
        except subprocess.TimeoutExpired:
            p.kill()
            failed.append("timed out")
    return dict(jobs=len(procs), seconds=round(time.monotonic() - t0, 1), failed=failed)


def _warm_shard(shard_json: str, device: torch.device) -> int:
    from bertfast._dtypes import parse_dtype
    from bertfast.kernels import gemm_dispatch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for _, dtype, shape in json.loads(shard_json):
            gemm_dispatch.measure_choices([tuple(shape)], parse_dtype(dtype), device, reps=1)
    return 0


def main(argv: list[str] | None = None) -> int:
    from bertfast._dtypes import parse_dtype
    from bertfast.kernels._utils import gpu_slug  # the rule the table loaders name files by

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--models", nargs="+", default=["bert-base", "bert-large", "minilm"])
    p.add_argument("--m-buckets", nargs="+", type=int, default=sorted(BENCH_BUCKETS + OTHER_BUCKETS))
    p.add_argument("--dtypes", nargs="+", default=["float16", "bfloat16"], help="bf16 after every fp16 shape")
    p.add_argument("--reps", type=int, default=20, help="timed calls per candidate and shape")
    p.add_argument("--jobs", type=int, default=0, help="worker processes compiling first (0: none)")
    p.add_argument("--budget-s", type=float, default=110.0, help="seconds for the whole stage (GEMMs: 65%%)")
    p.add_argument("--out", required=True, help="directory for the two tables, <gpu>.json and configs-<gpu>.json")
    p.add_argument("--summary", default=None, help="JSON file for what was measured (default: OUT/tables.json)")
    p.add_argument("--install", action="store_true", help="copy both tables into bertfast/kernels/tables/")
    p.add_argument("--warm-shard", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_tables: --device cuda, but no CUDA device is available")
    if args.warm_shard is not None:
        return _warm_shard(args.warm_shard, device)
    t0 = time.monotonic()
    dtypes = [parse_dtype(d) for d in args.dtypes]
    work = plan(args.models, args.m_buckets, dtypes)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    slug = gpu_slug(device_name(device))
    summary = {"device": device_name(device), "slug": slug, "models": args.models, "m_buckets": args.m_buckets}
    if args.jobs > 1:
        summary["warm"] = warm(work, args.jobs, device, timeout_s=0.4 * args.budget_s)
    # The GEMM rows get two thirds of the budget; the kernel configs the rest (a stage cut short while they
    # run still leaves the GEMM table and this summary).
    summary["gemm"] = measure_gemm(work, device, args.reps, out / f"{slug}.json", t0 + 0.65 * args.budget_s)
    summary_path = Path(args.summary or out / "tables.json")
    summary_path.write_text(json.dumps(summary, indent=1, default=str))
    try:
        summary["configs"] = measure_kernel_configs(
            args.models, args.m_buckets, dtypes, device, args.reps, out / f"configs-{slug}.json"
        )
    except Exception as ex:  # recorded in the report; the GEMM table above stands on its own
        summary["configs"] = {"failed": f"{type(ex).__name__}: {ex}"}
    if args.install:
        TABLES_DIR.mkdir(parents=True, exist_ok=True)
        for name in (f"{slug}.json", f"configs-{slug}.json"):
            if (out / name).is_file():
                shutil.copy2(out / name, TABLES_DIR / name)
        summary["installed"] = str(TABLES_DIR)
    summary["seconds"] = round(time.monotonic() - t0, 1)
    summary_path.write_text(json.dumps(summary, indent=1, default=str))
    print(json.dumps(summary, default=str))
    ok = summary["gemm"]["rows"] > 0 and "failed" not in summary["configs"]
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
