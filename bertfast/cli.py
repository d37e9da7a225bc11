"""`bertfast encode | bench | tune | info` from a shell (also `python -m bertfast ...`)."""

from __future__ import annotations

import argparse
import json
import platform
import sys

DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
          "bfloat16": "bfloat16", "bf16": "bfloat16"}  # fmt: skip


def _dtype(name: str):
    import torch

    return getattr(torch, DTYPES[name])


def cmd_encode(args: argparse.Namespace) -> int:
    from .sentence import SentenceEncoder

    texts = list(args.texts)
    if texts == ["-"] or not texts:
        if sys.stdin.isatty() and not texts:
            print("bertfast encode: give sentences as arguments, or '-' to read one per line from stdin",
                  file=sys.stderr)  # fmt: skip
            return 2
        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    device = args.device
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("bertfast encode: --device cuda, but no CUDA device is available", file=sys.stderr)
            return 2
    dtype = _dtype(args.dtype) if args.dtype else None
    encoder = SentenceEncoder.from_pretrained(args.model, device=device, dtype=dtype, backend=args.backend)
    emb = encoder.encode(texts, batch_size=args.batch_size)
    if args.json:
        json.dump([[float(x) for x in row] for row in emb], sys.stdout)
        sys.stdout.write("\n")
        return 0
    for text, row in zip(texts, emb):
        head = ", ".join(f"{x:+.4f}" for x in row[:6])
        print(f"{text}\n  dim={row.shape[0]} norm={float((row**2).sum() ** 0.5):.4f} [{head}, ...]")
    return 0


def info() -> dict:
    """Versions, devices, and which backends can run here."""
    import torch

    from . import __version__, ops

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
        "triton on cuda": "yes" if cuda and ops.triton_available() else
        ("no: " + (ops.triton_unavailable_reason(torch.device("cuda")) or "no CUDA device")),
        "triton on cpu (interpreter)": "yes" if ops.triton_unavailable_reason(torch.device("cpu")) is None
        else "no: " + ops.triton_unavailable_reason(torch.device("cpu")),
        "BERTFAST_BACKEND default": ops.default_backend(),
    }  # fmt: skip
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
        return 0
    for key, value in data.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for k, v in value.items():
                print(f"  {k}: {v}")
        else:
            print(f"{key}: {value}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    import torch

    from .modeling import BertModel
    from .runtime import tune

    if not torch.cuda.is_available():
        print("bertfast tune: needs a CUDA device (it autotunes the kernels and captures CUDA graphs)",
              file=sys.stderr)  # fmt: skip
        return 2
    dtype = _dtype(args.dtype)
    if args.model in ("bert-base", "bert-large"):
        from .config import PUBLISHED_CONFIGS, BertConfig

        torch.manual_seed(0)  # seeded random weights: tuning depends on shapes, not values
        model = BertModel(BertConfig(**PUBLISHED_CONFIGS[args.model]))
    else:
        from .sentence import default_model_dir

        model = BertModel.from_pretrained(args.model if args.model != "minilm" else default_model_dir())
    rows = tune(model.to(dtype), max_tokens=args.max_tokens, seq_len=args.seq_len)
    print(f"{'tokens':>8} {'bucket':>10} {'capture s':>10} {'replay ms':>10} {'us/token':>9}")
    for r in rows[:-1]:
        print(f"{r['tokens']:>8} {r['bucket']:>10} {r['capture_s']!s:>10} {r['ms']:>10.4f} {r['us_per_token']:>9.3f}")
    print(f"tuned configs written to {rows[-1]['cache']}; graphs hold {rows[-1]['graph_memory_mb']} MiB")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bertfast", description="Fast BERT encoders: embeddings, benchmarks, info.")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("encode", help="print sentence embeddings (default model: the embedded MiniLM-L6)")
    e.add_argument("texts", nargs="*", help="sentences; '-' reads one per line from stdin")
    e.add_argument("--json", action="store_true", help="print a JSON list of lists, as sentence-transformers gives")
    e.add_argument("--model", default=None, help="a BERT / sentence-transformers model directory")
    e.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    e.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="weights dtype (default: the checkpoint's)")
    e.add_argument("--backend", default="auto", choices=["auto", "torch", "triton"])
    e.add_argument("--batch-size", type=int, default=64)
    e.set_defaults(func=cmd_encode)

    i = sub.add_parser("info", help="versions, devices, and which backends can run here")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)

    t = sub.add_parser("tune", help="autotune the kernels and capture CUDA graphs per token bucket (GPU)")
    t.add_argument("--model", default="minilm", help="minilm (embedded), bert-base, bert-large, or a model directory")
    t.add_argument("--max-tokens", type=int, default=4096, help="largest token bucket to prepare")
    t.add_argument("--seq-len", type=int, default=128, help="sequence length of the tuning batches")
    t.add_argument("--dtype", default="float16", choices=sorted(DTYPES))
    t.set_defaults(func=cmd_tune)

    from . import bench_cli

    bench_cli.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, ImportError, RuntimeError) as e:
        print(f"bertfast {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
