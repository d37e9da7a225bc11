"""The smoke stage of scripts/gpu_check.sh: are the numbers right before anything is timed?

    python scripts/gpu_smoke.py --out smoke.json                      # on a GPU
    TRITON_INTERPRET=1 python scripts/gpu_smoke.py --device cpu --base-model tiny --dtypes float16 \\
        --out smoke.json                                              # the dry run: the interpreter

Checks, each on fresh random inputs against an independent reference, real positions only:
  model      MiniLM (real weights) in each dtype and the base model (random weights) in fp16, through the
             kernels, against HF fp32: bertfast's error at most 2x HF's own error in that dtype + ATOL
  gemm       every GEMM choice the device offers, once per shape (gemm_dispatch.measure_choices checks each
             against fp32 torch math and gives a wrong one no time)
  attention  varlen_attention at head dims 32 and 64 on a non-contiguous QKV: error at most 2x torch's
             own same-dtype error + ATOL against an fp64 reference
  graphs     (CUDA) a CUDA-graph replay against the same model's eager run: within HF's own fp16 error

Writes one JSON object ({"ok": bool, "checks": [...]}) to --out after every check and exits 1 when any
check failed, so that the caller stops before a speed figure is taken for wrong numbers.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time
import traceback
import zlib
from pathlib import Path

import torch

# The small absolute slack of DESIGN's numerics rule, per dtype (fp16 ~1e-3; bf16 has 3 fewer mantissa bits).
ATOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def _batch(batch: int, seq: int, vocab: int, seed: int, device: torch.device):
    """Right-padded ids and mask: lengths drawn in [1, seq], one row of `seq`, one of 1; [CLS] first."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, seq + 1, (batch,), generator=g)
    lengths[0], lengths[-1] = seq, 1
    ids = torch.randint(min(1000, vocab // 2), vocab, (batch, seq), generator=g)  # (B, S), no special tokens
    ids[:, 0] = 101
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()  # (B, S)
    return (ids * mask).to(device), mask.to(device)


def _hf(model_name: str):
    from bertfast.bench import build_hf

    return build_hf(model_name, "sdpa")  # fp32, CPU, eval


def check_model(model_name: str, dtype: torch.dtype, device: torch.device, backend: str, shape) -> dict:
    import bertfast

    gold = _hf(model_name).to(device)
    half = copy.deepcopy(gold).to(dtype)
    ours = bertfast.optimize(copy.deepcopy(half), backend=backend)
    ids, mask = _batch(
        *shape, gold.config.vocab_size, seed=zlib.crc32(f"{model_name} {dtype}".encode()) % 1000, device=device
    )
    real = mask.bool()
    with torch.inference_mode():
        ref = gold(input_ids=ids, attention_mask=mask).last_hidden_state[real]
        theirs = half(input_ids=ids, attention_mask=mask).last_hidden_state[real]
        mine = ours(input_ids=ids, attention_mask=mask).last_hidden_state[real]
    hf_err, err = _max_err(theirs, ref), _max_err(mine, ref)
    bound = 2 * hf_err + ATOL[dtype]
    return dict(ok=err <= bound, err=err, bound=bound, hf_err=hf_err, shape="x".join(map(str, shape)))


def check_gemm(dtype: torch.dtype, device: torch.device, shapes) -> dict:
    import warnings

    from bertfast.kernels import gemm_dispatch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a wrong or unrunnable choice shows in its row
        rows = gemm_dispatch.measure_choices(shapes, dtype, device, reps=1)
    seen, wrong = {}, []
    for r in rows:
        shape = f"{r['m']}x{r['n']}x{r['k']} {r['epilogue']}"
        for choice, ms in r["ms"].items():
            ran = r["max_error"].get(choice) is not None
            seen.setdefault(choice, []).append(shape if ran else f"{shape}: cannot run")
            if ran and ms is None:
                wrong.append(f"{choice} at {shape}: max error {r['max_error'][choice]:.3e}")
    ran_once = {c: any(not s.endswith("cannot run") for s in v) for c, v in seen.items()}
    missing = [c for c, ok in ran_once.items() if not ok]
    return dict(ok=not wrong and not missing, choices=seen, wrong=wrong, never_ran=missing)


def check_attention(head_dim: int, dtype: torch.dtype, device: torch.device, lengths: list[int]) -> dict:
    from bertfast.kernels.attention import varlen_attention, varlen_attention_ref

    heads, g = 2, torch.Generator().manual_seed(head_dim)
    H, T = heads * head_dim, sum(lengths)
    wide = torch.randn(T, 3 * H + 8, generator=g).to(device=device, dtype=dtype)  # (T, 3H + 8)
    qkv = wide[:, 4 : 4 + 3 * H]  # a column slice: non-contiguous rows, as inside the fused QKV output
    cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=torch.int32, device=device)
    out = torch.full((T, H), float("nan"), dtype=dtype, device=device)  # poisoned: every row must be written
    varlen_attention(qkv, cu, max(lengths), heads, out=out)
    ref = varlen_attention_ref(qkv, cu, heads, compute_dtype=torch.float64)
    own = varlen_attention_ref(qkv, cu, heads, compute_dtype=dtype)
    err, torch_err = _max_err(out, ref), _max_err(own, ref)
    bound = 2 * torch_err + ATOL[dtype]
    return dict(ok=bool(err <= bound), err=err, bound=bound, torch_err=torch_err, lengths=lengths)


def check_graphs(model_name: str, device: torch.device, shape) -> dict:
    import bertfast

    if device.type != "cuda":
        return dict(ok=True, skipped="needs CUDA")
    gold = _hf(model_name).to(device)
    half = copy.deepcopy(gold).half()
    ours = bertfast.optimize(copy.deepcopy(half), cuda_graphs=True)
    ids, mask = _batch(*shape, gold.config.vocab_size, seed=7, device=device)
    real = mask.bool()
    with torch.inference_mode():
        ours(input_ids=ids, attention_mask=mask)  # capture
        replay = ours(input_ids=ids, attention_mask=mask).last_hidden_state[real].clone()
        stats = bertfast.graph_stats(ours)
        bertfast.set_cuda_graphs(ours, False)
        eager = ours(input_ids=ids, attention_mask=mask).last_hidden_state[real]
        ref = gold(input_ids=ids, attention_mask=mask).last_hidden_state[real]
        theirs = half(input_ids=ids, attention_mask=mask).last_hidden_state[real]
    replays = sum(s.get("replays") or 0 for s in stats.values())
    diff, bound = _max_err(replay, eager), _max_err(theirs, ref)
    return dict(ok=replays >= 1 and diff <= bound, replays=replays, diff=diff, bound=bound)


def plan(args) -> list[tuple[str, object]]:
    from bertfast.kernels import gemm_dispatch

    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    backend = "auto" if cuda else "triton"
    shape = (16, 128) if cuda else (3, 24)
    dtypes = [torch.float16, torch.bfloat16] if args.dtypes is None else [_dtype(d) for d in args.dtypes]
    gelu = gemm_dispatch.epilogue_name(True, "gelu", False)
    ln = gemm_dispatch.epilogue_name(True, "", True, layernorm=True)
    # BERT-base's FFN1 and out-projection at a split-K size and an odd size past split-K's range
    gemm_shapes = [(128, 3072, 768, gelu), (257, 768, 768, ln)] if cuda else [(33, 96, 64, gelu), (17, 64, 96, ln)]
    lengths = [1, 33, 127, 257] if cuda else [1, 33, 20]
    checks = [(f"model minilm {_name(d)}", lambda d=d: check_model("minilm", d, dev, backend, shape)) for d in dtypes]
    checks.append(
        (f"model {args.base_model} float16", lambda: check_model(args.base_model, torch.float16, dev, backend, shape))
    )
    checks += [(f"gemm {_name(d)}", lambda d=d: check_gemm(d, dev, gemm_shapes)) for d in dtypes]
    checks += [
        (f"attention d{hd} float16", lambda hd=hd: check_attention(hd, torch.float16, dev, lengths)) for hd in (32, 64)
    ]
    checks.append((f"graphs {args.base_model} float16", lambda: check_graphs(args.base_model, dev, shape)))
    return checks


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype(name: str) -> torch.dtype:
    from bertfast._dtypes import parse_dtype

    return parse_dtype(name)


def run_check(name: str, run) -> dict:
    t0 = time.perf_counter()
    try:
        res = run()
    except Exception as ex:  # a crash is a failed check, with its reason in the report
        res = dict(ok=False, error=f"{type(ex).__name__}: {ex}", trace=traceback.format_exc(limit=4))
    return dict(name=name, **res, seconds=round(time.perf_counter() - t0, 2))


def run_parallel(argv: list[str], n_checks: int, jobs: int, out: Path) -> list[dict]:
    """Each check in its own process, `jobs` at a time: their Triton compiles run in parallel (and fill
    the disk cache that the later stages read). A process that dies is a failed check."""
    results, pending = [None] * n_checks, list(range(n_checks))
    running: list[tuple[int, subprocess.Popen, Path]] = []
    while pending or running:
        while pending and len(running) < jobs:
            i = pending.pop(0)
            part = out.with_name(f"{out.stem}-{i}.json")
            cmd = [sys.executable, __file__, *argv, "--only", str(i), "--out", str(part)]
            running.append(
                (i, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), part)
            )
        i, proc, part = running.pop(0)
        log, _ = proc.communicate()
        print(log, end="", flush=True)
        try:
            results[i] = json.loads(part.read_text())["checks"][0]
            part.unlink()
        except (OSError, json.JSONDecodeError, IndexError, KeyError):
            results[i] = dict(
                name=f"check {i}", ok=False, error=f"its process exited {proc.returncode} without a result"
            )
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--base-model", default="bert-base", help="the random-weight model (tiny: the dry run's)")
    p.add_argument("--dtypes", nargs="+", default=None, help="MiniLM's dtypes (default float16 bfloat16)")
    p.add_argument("--jobs", type=int, default=1, help="checks run in this many processes at once")
    p.add_argument("--checks", nargs="+", default=None, help="only the checks whose names start with these")
    p.add_argument("--out", required=True, help="JSON file, rewritten after every check")
    p.add_argument("--only", type=int, default=None, help=argparse.SUPPRESS)  # one check (a --jobs worker)
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_smoke: --device cuda, but no CUDA device is available")
    checks = [c for c in plan(args) if args.checks is None or c[0].startswith(tuple(args.checks))]
    if not checks:
        raise SystemExit(f"gpu_smoke: no check matches {args.checks}")
    out = Path(args.out)
    report = {"ok": True, "device": args.device, "checks": []}
    if args.jobs > 1 and args.only is None:
        keep = _drop_values(argv, ("--jobs", "--out"))
        report["checks"] = run_parallel(keep, len(checks), args.jobs, out)
    else:
        for k, (name, run) in enumerate(checks):
            if args.only is not None and k != args.only:
                continue
            res = run_check(name, run)
            report["checks"].append(res)
            detail = {k: v for k, v in res.items() if k not in ("name", "ok", "trace")}
            print(("ok  " if res["ok"] else "FAIL") + f" {name}: " + json.dumps(detail, default=str), flush=True)
            out.write_text(json.dumps(report, indent=1, default=str))
    report["ok"] = all(bool(c["ok"]) for c in report["checks"])
    out.write_text(json.dumps(report, indent=1, default=str))
    return 0 if report["ok"] else 1


def _drop_values(argv: list[str], names: tuple[str, ...]) -> list[str]:
    """argv without the options `names` and their values (each written as '--x V' or '--x=V')."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in names:
            skip = True
        elif not a.startswith(tuple(n + "=" for n in names)):
            out.append(a)
    return out


if __name__ == "__main__":
    sys.exit(main())
