"""`bertfast encode | embed | serve | bench | tune | info` from a shell (also `python -m bertfast ...`).

Every command exits with the codes of bertfast/exit_codes.py: 0 done, 1 failed on what it was given
(model folder, checkpoint, input file), 2 a command line that cannot run as written (argparse's usage
errors, an option that does not apply, a device or package this machine lacks).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

from . import __version__
from ._argtypes import dtype_arg, positive_int
from ._dtypes import DTYPE_NAMES
from .exit_codes import EXIT_BROKEN_PIPE, EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError


def _show_progress(args: argparse.Namespace) -> bool:
    """A progress bar on stderr when it is a terminal and --quiet was not given."""
    return not args.quiet and sys.stderr.isatty()


def cmd_encode(args: argparse.Namespace) -> int:
    from .sentence import SentenceEncoder

    texts = list(args.texts)
    if texts == ["-"] or not texts:
        if sys.stdin.isatty() and not texts:
            raise UsageError("give sentences as arguments, or '-' to read one per line from stdin")
        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    device = args.device
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda, but no CUDA device is available")
    encoder = SentenceEncoder.from_pretrained(args.model, device=device, dtype=args.dtype, backend=args.backend)
    emb = encoder.encode(texts, batch_size=args.batch_size, show_progress_bar=_show_progress(args))
    if args.json:
        json.dump([[float(x) for x in row] for row in emb], sys.stdout)
        sys.stdout.write("\n")
        return EXIT_OK
    for text, row in zip(texts, emb):
        head = ", ".join(f"{x:+.4f}" for x in row[:6])
        print(f"{text}\n  dim={row.shape[0]} norm={float((row**2).sum() ** 0.5):.4f} [{head}, ...]")
    return EXIT_OK


def info() -> dict:
    """Versions, devices, and which backends can run here."""
    import torch

    from . import ops

    out: dict = {
        "bertfast": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    for name in ("triton", "transformers", "sentence_transformers", "tokenizers"):
        try:
            mod = __import__(name)
            out[name] = getattr(mod, "__version__", "?")
        except Exception as e:  # not installed, or broken: say which
            out[name] = f"unavailable ({type(e).__name__})"
    cuda = torch.cuda.is_available()
    out["cuda"] = {
        "available": cuda,
        "torch_cuda": torch.version.cuda,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
    }
    out["backends"] = {
        "torch": "yes (cpu" + (", cuda)" if cuda else ")"),
        "triton on cuda": "yes"
        if cuda and ops.triton_available()
        else ("no: " + (ops.triton_unavailable_reason(torch.device("cuda")) or "no CUDA device")),
        "triton on cpu (interpreter)": "yes"
        if ops.triton_unavailable_reason(torch.device("cpu")) is None
        else "no: " + ops.triton_unavailable_reason(torch.device("cpu")),
        "BERTFAST_BACKEND default": ops.default_backend(),
    }
    try:
        from . import _wordpiece

        out["tokenizer"] = f"C++ WordPiece extension loaded ({_wordpiece.__file__})"
    except ImportError as e:  # reported, not hidden: the build failed or was skipped
        out["tokenizer"] = f"C++ extension unavailable ({e}); reinstall with pip install -e ."
    return out


def cmd_info(args: argparse.Namespace) -> int:
    data = info()
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    for key, value in data.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for k, v in value.items():
                print(f"  {k}: {v}")
        else:
            print(f"{key}: {value}")
    return EXIT_OK


def cmd_tune(args: argparse.Namespace) -> int:
    import torch

    from .config import PUBLISHED_CONFIGS, BertConfig
    from .modeling import BertModel
    from .runtime import tune

    model = None
    if args.model not in PUBLISHED_CONFIGS:  # a folder: a bad one is reported (exit 1) before the device
        from .sentence import default_model_dir

        model = BertModel.from_pretrained(args.model if args.model != "minilm" else default_model_dir())
    if not torch.cuda.is_available():
        raise UsageError("needs a CUDA device (it autotunes the kernels and captures CUDA graphs)")
    dtype = args.dtype
    if model is None:
        torch.manual_seed(0)  # seeded random weights: tuning depends on shapes, not values
        model = BertModel(BertConfig(**PUBLISHED_CONFIGS[args.model]))
    rows = tune(
        model.to(dtype),
        max_tokens=args.max_tokens,
        seq_len=args.seq_len,
        progress=_show_progress(args),
        gemm_table=args.gemm_table,
    )
    print(f"{'tokens':>8} {'sequences':>10} {'replay ms':>10} {'us/token':>9}")
    for r in rows[:-1]:
        print(f"{r['tokens']:>8} {r['sequences']:>10} {r['ms']:>10.4f} {r['us_per_token']:>9.3f}")
    last = rows[-1]
    print(f"tuned configs written to {last['cache']}; graphs hold {last['graph_memory_mb']} MiB")
    if "gemm_table" in last:
        print(f"GEMM choice table written to {last['gemm_table']}")
    return EXIT_OK


def _add_encode(sub) -> None:
    e = sub.add_parser(
        "encode",
        help="print sentence embeddings (default model: the embedded MiniLM-L6)",
        description="Embed sentences as sentence-transformers' encode() does, on bertfast's packed path.",
    )
    e.add_argument("texts", nargs="*", help="sentences; '-' (or none, with a pipe) reads one per line from stdin")
    e.add_argument(
        "--json",
        action="store_true",
        help="print one JSON list of lists (one row per sentence) instead of a summary per sentence",
    )
    e.add_argument(
        "--model",
        default=None,
        metavar="DIR",
        help="an encoder or sentence-transformers folder of any supported family (default: the embedded MiniLM-L6)",
    )
    e.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the model runs (default: cpu)")
    e.add_argument(
        "--dtype",
        default=None,
        type=dtype_arg,
        metavar="DTYPE",
        help=f"weights dtype, one of {', '.join(DTYPE_NAMES)} (default: the checkpoint's)",
    )
    e.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "torch", "triton"],
        help="auto: Triton kernels on CUDA, PyTorch on CPU; torch: PyTorch everywhere; triton: the "
        "kernels (on CPU only under TRITON_INTERPRET=1) (default: auto)",
    )
    e.add_argument(
        "--batch-size",
        type=positive_int,
        default=64,
        metavar="N",
        help="sentences per forward; they are sorted by length first (default: 64)",
    )
    e.add_argument("--quiet", action="store_true", help="no progress bar (shown only when stderr is a terminal)")
    e.set_defaults(func=cmd_encode)


def _embed_unavailable(args: argparse.Namespace) -> int:
    raise UsageError("this installation has no bertfast.embed module")


def _add_embed(sub) -> None:
    """The corpus job; its options and its run live in bertfast.embed, imported only here."""
    x = sub.add_parser(
        "embed",
        help="embed a file of texts (.txt, .jsonl, .parquet) into Parquet, resumable",
        description="Embed a corpus into Parquet shards with every local GPU (else the CPU), or on Ray Data.",
    )
    try:
        from .embed import add_arguments, run_cli
    except ModuleNotFoundError as e:
        if e.name != f"{__package__}.embed":  # embed.py is there but needs something missing: say so
            raise
        x.set_defaults(func=_embed_unavailable)
        return
    add_arguments(x)
    x.set_defaults(func=run_cli)


def _add_serve(sub) -> None:
    """The server; its options and its run live in bertfast.serve (fastapi etc. imported only when it runs)."""
    from .serve import add_arguments

    s = sub.add_parser(
        "serve",
        help="an embedding / reranking HTTP server (OpenAI- and TEI-compatible routes)",
        description="Serve /v1/embeddings, /embed and /rerank with token-budget batching "
        "(pip install 'bertfast[serve]').",
    )
    add_arguments(s)


def _add_info(sub) -> None:
    i = sub.add_parser(
        "info",
        help="versions, devices, and which backends can run here",
        description="Print the versions of bertfast and its dependencies, the CUDA devices, and which "
        "backends (torch, Triton on CUDA, the Triton interpreter on the CPU) can run on this machine.",
    )
    i.add_argument("--json", action="store_true", help="print the report as one JSON object")
    i.set_defaults(func=cmd_info)


def _add_tune(sub) -> None:
    t = sub.add_parser(
        "tune",
        help="autotune the kernels and capture CUDA graphs per token bucket (GPU)",
        description="On a CUDA device: run Triton's autotuner for every kernel shape of the model's token "
        "buckets, write the winners to the user cache (~/.cache/bertfast/tuned-<gpu>.json, used by later "
        "runs on the same GPU, triton and kernel sources), and print the graph replay time per bucket.",
    )
    t.add_argument(
        "--model",
        default="minilm",
        help="minilm (embedded), bert-base, bert-large (seeded random weights), or a model directory (default: minilm)",
    )
    t.add_argument(
        "--max-tokens", type=positive_int, default=4096, help="largest token bucket to prepare (default: 4096)"
    )
    t.add_argument(
        "--seq-len", type=positive_int, default=128, help="sequence length of the tuning batches (default: 128)"
    )
    t.add_argument(
        "--dtype",
        default="float16",
        type=dtype_arg,
        metavar="DTYPE",
        help=f"dtype to tune for, one of {', '.join(DTYPE_NAMES)} (default: float16)",
    )
    t.add_argument(
        "--gemm-table",
        metavar="PATH",
        default=None,
        help="also time every GEMM implementation on the model's shapes and write the choice table "
        "to PATH (the project commits them as bertfast/kernels/tables/<gpu>.json)",
    )
    t.add_argument("--quiet", action="store_true", help="no progress bar (shown only when stderr is a terminal)")
    t.set_defaults(func=cmd_tune)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bertfast", description="Fast BERT encoders: embeddings, benchmarks, info.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    _add_encode(sub)
    _add_embed(sub)
    _add_serve(sub)
    _add_info(sub)
    _add_tune(sub)

    from . import bench_cli

    bench_cli.register(sub)
    return p


def exit_code(error: BaseException) -> int:
    """The exit code of a command that raised `error`: EXIT_USAGE when the command line cannot run as
    written (a UsageError, an optional package missing), EXIT_FAILED for what it was given."""
    return EXIT_USAGE if isinstance(error, (UsageError, ImportError)) else EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # `bertfast info --json | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except (ValueError, TypeError, OSError, ImportError, RuntimeError) as e:
        print(f"bertfast {args.command}: {e}", file=sys.stderr)
        return exit_code(e)


if __name__ == "__main__":
    sys.exit(main())
