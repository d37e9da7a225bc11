"""The routes: OpenAI's /v1/embeddings, TEI's /embed and /rerank, /health, /info and /metrics.

A route validates its body (pydantic, then `parse_inputs`), reserves room in the queue (429 when there
is none), tokenizes off the event loop, submits the texts to the batcher and awaits its own rows; if
its client disconnects meanwhile, its texts are dropped from the queue and nobody else notices.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from .. import __version__
from .batcher import Batcher, QueueFull
from .engine import EMBEDDING, RERANKER, InputTooLong
from .errors import ApiError, error_response, field_path
from .guard import Guard
from .metrics import Metrics
from .schemas import EmbeddingsRequest, EmbedRequest, RerankRequest, check_text, parse_inputs

log = logging.getLogger("bertfast.serve")

# How long a client told 429 (full queue) or 503 (warming up) should wait before trying again, seconds.
RETRY_AFTER_S = 1


@dataclass(frozen=True)
class Limits:
    max_batch_tokens: int = 16384
    max_queue: int = 32768
    max_inputs: int = 2048
    max_body_bytes: int = 2 * 1024 * 1024
    max_wait_ms: float = 2.0


class _ClientGone(Exception):
    pass


def _json(body) -> Response:
    # orjson writes the float vectors ~15x faster than json.dumps, with the same shortest round-trip digits.
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


async def _disconnected(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class Service:
    """The model, its batcher and its tokenizing threads; what the routes share."""

    def __init__(self, model, limits: Limits, metrics: Metrics):
        self.model, self.limits, self.metrics = model, limits, metrics
        self.ready = False
        self.batcher: Batcher | None = None
        # Tokenizing runs here, never on the event loop (the C++ tokenizer releases the GIL).
        self._tokenize_pool = ThreadPoolExecutor(2, thread_name_prefix="bertfast-tokenize")

    async def start(self) -> None:
        lim = self.limits
        self.batcher = Batcher(
            self.model.forward,
            len(self.model.devices),
            max_batch_tokens=lim.max_batch_tokens,
            max_queue=lim.max_queue,
            max_wait_s=lim.max_wait_ms / 1000,
            metrics=self.metrics,
        )
        self.batcher.start()
        try:
            await self.batcher.warm_up(self.model.warmup_items())
        except Exception:  # /health keeps answering 503: a load balancer sends this server nothing
            log.exception("bertfast serve: warm-up failed on %s; the server stays unready", self.model.devices)
            raise
        self.ready = True
        log.info("bertfast serve: warmed up on %s, ready", ", ".join(self.model.devices))

    async def stop(self) -> None:
        if self.batcher is not None:
            await self.batcher.stop()
        self._tokenize_pool.shutdown(wait=True)

    async def run(self, request: Request, route: str, n: int, tokenize, *args) -> tuple[np.ndarray, int]:
        """Reserve, tokenize (off the loop), batch: this request's rows in input order, and its tokens."""
        if not self.ready:
            raise ApiError(503, "the model is warming up", None, {"Retry-After": str(RETRY_AFTER_S)})
        try:
            self.batcher.reserve(n)
        except QueueFull as e:
            raise ApiError(429, f"the server is overloaded: {e}", None, {"Retry-After": str(RETRY_AFTER_S)}) from None
        try:
            encoded = await asyncio.get_running_loop().run_in_executor(self._tokenize_pool, tokenize, *args)
        except BaseException:
            self.batcher.release(n)
            raise
        job = self.batcher.submit(encoded)
        gone = asyncio.ensure_future(_disconnected(request.receive))
        try:
            await asyncio.wait({job.future, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not job.future.done():
                job.future.cancel()  # a batch running with its texts ignores them
                self.batcher.forget(job)  # its texts still queued are dropped
        if job.future.cancelled():
            raise _ClientGone
        self.metrics.inputs.labels(route).inc(n)
        return job.future.result(), sum(len(e.ids) for e in encoded)

    def check_kind(self, kind: str, route: str) -> None:
        if self.model.kind != kind:
            other = "/rerank" if self.model.kind == RERANKER else "/v1/embeddings or /embed"
            served = "a reranker (a CrossEncoder)" if self.model.kind == RERANKER else "an embedding model"
            raise ApiError(400, f"{route} is not served: this server runs {served}; use {other}")


def _normalized(emb: np.ndarray) -> np.ndarray:
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def _add_model_routes(app: FastAPI, svc: Service) -> None:
    model = svc.model

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingsRequest, request: Request):
        svc.check_kind(EMBEDDING, "/v1/embeddings")
        inputs = parse_inputs(body.input, "input", svc.limits.max_inputs, model.vocab_size)
        if body.dimensions is not None and body.dimensions > model.dimension:
            raise ApiError(
                400, f"must be at most the model's width {model.dimension}, got {body.dimensions}", "dimensions"
            )
        emb, tokens = await svc.run(request, "/v1/embeddings", len(inputs), model.tokenize, inputs, False)
        if body.dimensions is not None:  # truncated, then renormalized: OpenAI's shortened embeddings
            emb = _normalized(emb[:, : body.dimensions])
        if body.encoding_format == "base64":
            vectors = [base64.b64encode(r.astype("<f4").tobytes()).decode("ascii") for r in emb]
        else:
            vectors = emb.tolist()
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return _json({"object": "list", "data": data, "model": body.model or model.name, "usage": usage})

    @app.post("/embed")
    async def embed(body: EmbedRequest, request: Request):
        svc.check_kind(EMBEDDING, "/embed")
        inputs = parse_inputs(body.inputs, "inputs", svc.limits.max_inputs, model.vocab_size)
        emb, _ = await svc.run(request, "/embed", len(inputs), model.tokenize, inputs, body.truncate)
        return _json((_normalized(emb) if body.normalize else emb).tolist())

    @app.post("/rerank")
    async def rerank(body: RerankRequest, request: Request):
        svc.check_kind(RERANKER, "/rerank")
        if len(body.texts) > svc.limits.max_inputs:
            message = f"holds {len(body.texts)} texts, more than the {svc.limits.max_inputs} allowed per request"
            raise ApiError(422, message, "texts")
        check_text(body.query, "query")
        for i, text in enumerate(body.texts):
            check_text(text, f"texts[{i}]")
        args = (body.query, body.texts, body.truncate)
        logits, _ = await svc.run(request, "/rerank", len(body.texts), model.tokenize, *args)
        scores = model.scores(logits, body.raw_scores)
        out = []
        for i in np.argsort(-scores, kind="stable").tolist():
            entry = {"index": i, "score": float(scores[i])}
            if body.return_text:
                entry["text"] = body.texts[i]
            out.append(entry)
        return _json(out)


def _add_service_routes(app: FastAPI, svc: Service) -> None:
    model = svc.model

    @app.get("/health")
    async def health():
        if not svc.ready:
            raise ApiError(503, "the model is warming up", None, {"Retry-After": str(RETRY_AFTER_S)})
        return _json({"status": "ok"})

    @app.get("/info")
    async def info():
        lim = svc.limits
        return _json(
            {
                "model_id": model.name,
                "model_type": model.kind,
                "model_dtype": str(model.dtype).removeprefix("torch."),
                "dimension": model.dimension,
                "max_input_length": model.max_length,
                "devices": model.devices,
                "max_batch_tokens": lim.max_batch_tokens,
                "max_queue": lim.max_queue,
                "max_client_batch_size": lim.max_inputs,
                "max_body_bytes": lim.max_body_bytes,
                "max_wait_ms": lim.max_wait_ms,
                "version": __version__,
            }
        )

    @app.get("/metrics")
    async def metrics():
        body, content_type = svc.metrics.render()
        return Response(body, media_type=content_type)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return error_response(request.url.path, e.status, e.message, e.param, e.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        first = e.errors()[0]
        param = field_path(first.get("loc", ()))
        if first.get("type") == "json_invalid":
            message = f"is not valid JSON: {first.get('ctx', {}).get('error', 'malformed')}"
            param = "body"
        elif param == "body" and first.get("type") in ("model_attributes_type", "dict_type", "model_type"):
            message = "must be a JSON object, sent with Content-Type: application/json"
        else:
            message = first.get("msg", "is invalid")
        return error_response(request.url.path, 422, message, param)

    @app.exception_handler(InputTooLong)
    async def too_long(request: Request, e: InputTooLong):
        path = request.url.path
        if path.startswith("/v1/"):  # OpenAI's contract refuses what is too long
            return error_response(path, 422, str(e), f"input[{e.index}]")
        field = "texts" if path == "/rerank" else "inputs"
        return error_response(path, 422, f"{e} (pass truncate: true to truncate it)", f"{field}[{e.index}]")

    @app.exception_handler(_ClientGone)
    async def gone(request: Request, e: _ClientGone):
        return Response(status_code=499)  # nginx's "client closed request": only the metrics see it

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):
        return error_response(request.url.path, e.status_code, str(e.detail), None, getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def internal(request: Request, e: Exception):
        log.exception("bertfast serve: %s failed", request.url.path)
        return error_response(request.url.path, 500, f"internal error ({type(e).__name__}); see the server's log")


def create_app(model, limits: Limits = Limits(), api_keys: list[str] | None = None):
    """The ASGI app serving `model` (an engine.EmbeddingModel or engine.RerankModel)."""
    metrics = Metrics()
    svc = Service(model, limits, metrics)

    @asynccontextmanager
    async def lifespan(app):
        # Warm-up runs after the socket is bound, so /health can answer 503 until it is done.
        warm = asyncio.get_running_loop().create_task(svc.start())
        try:
            yield
        finally:
            await asyncio.gather(warm, return_exceptions=True)
            await svc.stop()

    app = FastAPI(title="bertfast serve", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = svc
    _add_model_routes(app, svc)
    _add_service_routes(app, svc)
    _add_error_handlers(app)
    return Guard(app, max_body_bytes=limits.max_body_bytes, api_keys=api_keys or [], metrics=metrics)
