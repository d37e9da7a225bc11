"""The ASGI layer in front of the routes: the body limit, the API key, and per-route metrics.

It reads the body itself (bounded by the limit, whatever Content-Length claims), so a body over the
limit is answered 413 before any route parses it, then hands the route the body it read.
"""

from __future__ import annotations

import hmac
import time

from .errors import error_response
from .metrics import Metrics

ROUTES = ("/v1/embeddings", "/embed", "/rerank", "/health", "/info", "/metrics")
OPEN_ROUTES = ("/health",)  # answered without an API key: load balancers probe it


class _BodyTooLarge(Exception):
    pass


class Guard:
    def __init__(self, app, *, max_body_bytes: int, api_keys: list[str], metrics: Metrics):
        self.app, self.max_body_bytes, self.metrics = app, max_body_bytes, metrics
        self._keys = [k.encode() for k in api_keys]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        route = path if path in ROUTES else "other"
        start = time.perf_counter()
        status = [500]

        async def send_recorded(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        in_flight = self.metrics.in_flight.labels(route)
        in_flight.inc()
        try:
            await self._handle(scope, receive, send_recorded, path)
        finally:
            in_flight.dec()
            self.metrics.requests.labels(route, str(status[0])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)

    async def _handle(self, scope, receive, send, path: str):
        if self._keys and path not in OPEN_ROUTES and not self._authorized(scope):
            headers = {"WWW-Authenticate": "Bearer"}
            return await error_response(
                path, 401, "a valid 'Authorization: Bearer <key>' header is required", None, headers
            )(scope, receive, send)
        try:
            body = await self._read_body(scope, receive)
        except _BodyTooLarge:
            message = f"the request body is larger than the {self.max_body_bytes} bytes allowed"
            return await error_response(path, 413, message, "body", {"Connection": "close"})(scope, receive, send)
        if body is None:  # the client left before sending its body
            return None
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    def _authorized(self, scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    token = token.strip()
                    # compare_digest against every key: the time taken says nothing about which one is near
                    return any([hmac.compare_digest(token, k) for k in self._keys])
        return False

    async def _read_body(self, scope, receive) -> bytes | None:
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body_bytes:
                raise _BodyTooLarge
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
