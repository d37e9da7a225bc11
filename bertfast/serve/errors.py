"""Errors in the shape each family of routes speaks: OpenAI's error object on /v1/*, TEI's elsewhere.
Every message names the field (and, in a list, the index) that was wrong; none carries a traceback."""

from __future__ import annotations

import json

from starlette.responses import Response

# The TEI error_type and the OpenAI error type of each status the server answers with.
_KINDS = {
    400: ("Validation", "invalid_request_error"),
    401: ("Unauthorized", "invalid_request_error"),
    404: ("NotFound", "invalid_request_error"),
    405: ("MethodNotAllowed", "invalid_request_error"),
    413: ("Validation", "invalid_request_error"),
    415: ("Validation", "invalid_request_error"),
    422: ("Validation", "invalid_request_error"),
    429: ("Overloaded", "rate_limit_error"),
    500: ("Backend", "server_error"),
    503: ("Unhealthy", "server_error"),
}


class ApiError(Exception):
    """An answer other than 200: status, a message, the field it is about (`input[3]`), headers."""

    def __init__(self, status: int, message: str, param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.headers = status, message, param, headers or {}


def field_path(loc) -> str | None:
    """('body', 'texts', 2) -> 'texts[2]'; the body itself -> 'body'."""
    parts = [p for p in loc if p != "body"]
    if not parts:
        return "body"
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def error_response(path: str, status: int, message: str, param: str | None = None, headers=None) -> Response:
    """The JSON error for a route: OpenAI's object under /v1/, TEI's {error, error_type} elsewhere."""
    if status == 422 and path.startswith("/v1/"):  # OpenAI answers every invalid request with 400
        status = 400
    tei_kind, openai_kind = _KINDS.get(status, ("Validation" if status < 500 else "Backend", "invalid_request_error"))
    text = f"{param}: {message}" if param and not message.startswith(param) else message
    if path.startswith("/v1/"):
        body = {"error": {"message": text, "type": openai_kind, "param": param, "code": None}}
    else:
        body = {"error": text, "error_type": tei_kind}
    return Response(json.dumps(body), status_code=status, media_type="application/json", headers=headers)
