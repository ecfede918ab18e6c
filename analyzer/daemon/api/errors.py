"""Every refusal of the HTTP layer in one JSON shape: `{"error": <HTTP phrase>, "message": <what
went wrong and what to do>, "field": <the request field at fault, 400 only>}`, and the mapping
of the store's errors to statuses (404 NotFound, 409 InvalidCommand, 503 StoreError and any
other database error)."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from starlette.types import Send

from analyzer.daemon.store import InvalidCommand, NotFound, StoreError


def phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def error_body(status: int, message: str, field: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": phrase(status), "message": message}
    if field is not None:
        body["field"] = field
    return body


def store_error_status(exc: StoreError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, InvalidCommand):
        return 409
    return 503


async def send_json_error(send: Send, status: int, message: str,
                          headers: dict[str, str] | None = None) -> None:
    """Answer at the ASGI level (middleware, before or instead of the app)."""
    data = (json.dumps(error_body(status, message)) + "\n").encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
           (b"cache-control", b"no-store")]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})
