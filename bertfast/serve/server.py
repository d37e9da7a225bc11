"""Running the app under uvicorn: devices planned, the model loaded once per device, limits checked
against the model, the URL logged, and a signal (SIGTERM, SIGINT) taken as a graceful stop: no new
connections, the requests in flight answered, exit status 0."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import signal

import torch
import uvicorn

from .app import Limits, create_app
from .devices import plan_devices
from .engine import load_model

log = logging.getLogger("bertfast.serve")

# Seconds uvicorn waits for requests in flight after a stop signal before closing their connections.
GRACEFUL_SHUTDOWN_S = 60


def read_api_keys(path: str) -> list[str]:
    """One key per line; blank lines skipped. A file without any key is an error, not an open server."""
    try:
        with open(path, encoding="utf-8") as f:
            keys = [line.strip() for line in f if line.strip()]
    except OSError as e:
        raise ValueError(f"api-key-file: cannot read {path}: {e.strerror}") from None
    if not keys:
        raise ValueError(f"api-key-file: {path} holds no key")
    return keys


def resolve_devices(device: str) -> list[str]:
    count = torch.cuda.device_count() if device != "cpu" else 0
    if device == "auto":
        device = "cuda" if count else "cpu"
    return plan_devices(device, count)


def check_limits(limits: Limits, max_length: int) -> None:
    if limits.max_batch_tokens < max_length:
        raise ValueError(
            f"max-batch-tokens ({limits.max_batch_tokens}) must be at least the model's length limit ({max_length}) "
            "so that every text fits a batch"
        )
    if limits.max_queue < limits.max_inputs:
        raise ValueError(f"max-queue ({limits.max_queue}) must be at least max-inputs ({limits.max_inputs})")


def serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    limits = Limits(
        max_batch_tokens=args.max_batch_tokens,
        max_queue=args.max_queue,
        max_inputs=args.max_inputs,
        max_body_bytes=args.max_body_bytes,
        max_wait_ms=args.max_wait_ms,
    )
    keys = read_api_keys(args.api_key_file) if args.api_key_file else []
    devices = resolve_devices(args.device)
    model = load_model(args.model, devices, args.dtype, args.backend)
    check_limits(limits, model.max_length)
    app = create_app(model, limits, keys)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,  # /metrics counts requests by route and status
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    host = f"[{args.host}]" if ":" in args.host else args.host
    log.info(
        "bertfast serve: %s model %s on %s at http://%s:%d (warming up; /health answers 200 when ready)",
        model.kind,
        model.name,
        ", ".join(devices),
        host,
        args.port,
    )
    # uvicorn re-raises the stop signal once its graceful shutdown is done; by then it has been handled,
    # so the handlers it restores and re-raises into do nothing and the process exits 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: None)
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1
