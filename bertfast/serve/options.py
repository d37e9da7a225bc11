"""`bertfast serve`'s options and its run: argparse only here, so that `bertfast --help` works without
the serve extra installed; the server itself is imported when the command runs."""

from __future__ import annotations

import argparse
import sys

from .._argtypes import dtype_arg, positive_int
from .._dtypes import DTYPE_NAMES


def _port(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port 1..65535, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        metavar="DIR",
        help="a sentence-transformers model folder (embeddings: /v1/embeddings, /embed) or a CrossEncoder "
        "folder (scores: /rerank) (default: the embedded MiniLM-L6)",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, loopback only; 0.0.0.0 for all)"
    )
    p.add_argument("--port", type=_port, default=8080, help="the TCP port (default: 8080)")
    p.add_argument(
        "--device",
        default="auto",
        help="cpu; cuda (one model per visible GPU); cuda:N or a comma list of them; auto: cuda when a GPU "
        "is visible, else cpu (default: auto)",
    )
    p.add_argument(
        "--dtype",
        default=None,
        type=dtype_arg,
        metavar="DTYPE",
        help=f"weights dtype, one of {', '.join(DTYPE_NAMES)} (default: the checkpoint's)",
    )
    p.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "torch", "triton"],
        help="auto: Triton kernels on CUDA, PyTorch on CPU; torch; triton (default: auto)",
    )
    p.add_argument(
        "--max-batch-tokens",
        type=positive_int,
        default=16384,
        metavar="N",
        help="real tokens (after tokenization) in one packed forward, at most; at least the model's length "
        "limit (default: 16384)",
    )
    p.add_argument(
        "--max-queue",
        type=positive_int,
        default=32768,
        metavar="N",
        help="texts waiting for a batch, at most; a request that does not fit is answered 429 with "
        "Retry-After (default: 32768)",
    )
    p.add_argument(
        "--max-inputs",
        type=positive_int,
        default=2048,
        metavar="N",
        help="inputs in one request, at most (default: 2048)",
    )
    p.add_argument(
        "--max-body-bytes",
        type=positive_int,
        default=2 * 1024 * 1024,
        metavar="N",
        help="request body size, at most; larger bodies are answered 413 (default: 2097152, 2 MB)",
    )
    p.add_argument(
        "--max-wait-ms",
        type=_non_negative_float,
        default=2.0,
        metavar="MS",
        help="how long an idle device waits for texts still being tokenized to join its batch (default: 2)",
    )
    p.add_argument(
        "--api-key-file",
        default=None,
        metavar="F",
        help="a file of API keys, one per line: every route but /health then needs 'Authorization: Bearer KEY'",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="server log level (default: info)",
    )
    p.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    try:
        from .server import serve
    except ModuleNotFoundError as e:
        if e.name in ("fastapi", "starlette", "uvicorn", "prometheus_client", "pydantic", "orjson"):
            print(f"bertfast serve: needs {e.name}: pip install 'bertfast[serve]'", file=sys.stderr)
            return 2
        raise
    return serve(args)
