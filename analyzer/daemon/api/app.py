"""The ASGI application: FastAPI with the routes, the dashboard, live updates, the limits and
one JSON shape for every refusal.

`create_app(ctx)` builds it for one `ApiContext`; server.py serves it with uvicorn, tests may
call it in-process. The OpenAPI document (/openapi.json) is generated from the routes and
models, with FastAPI's 422 for invalid input replaced by the 400 this API answers (the field
is named in `field` and in the message).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from analyzer.daemon.api import routes, sse, ui
from analyzer.daemon.api.context import ApiContext
from analyzer.daemon.api.errors import error_body, store_error_status
from analyzer.daemon.api.limits import RequestLimits
from analyzer.daemon.store import StoreError

log = logging.getLogger("analyzer.daemon.api")

TITLE = "Canary Analyzer engine API"
DESCRIPTION = (
    "Rollouts and their decision logs; manual commands behind a bearer token. Every refusal is "
    "`{error, message[, field]}`; invalid input is a 400 naming the field; database trouble, a "
    "passed request deadline or too many requests in flight is a 503 (retry).")


def create_app(ctx: ApiContext) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.loop = asyncio.get_running_loop()  # server.py closes the streams through it
        yield
        app.state.feed.close()

    app = FastAPI(title=TITLE, version="1", description=DESCRIPTION, docs_url=None,
                  redoc_url=None, lifespan=lifespan, redirect_slashes=False)
    app.state.api = ctx
    app.state.feed = sse.ChangeFeed(ctx)
    app.state.assets = ui.load_assets()
    app.include_router(routes.rollouts)
    app.include_router(routes.ops)
    app.include_router(sse.router)
    app.include_router(ui.router)
    app.add_middleware(RequestLimits, limits=ctx.limits)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(StoreError, _store_error)
    app.add_exception_handler(SQLAlchemyError, _database_error)
    app.add_exception_handler(Exception, _unexpected)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None
          ) -> JSONResponse:
    return JSONResponse(body, status_code=status,
                        headers={"Cache-Control": "no-store", **(headers or {})})


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    first_field = None
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ())]
        where, name = (loc[0], ".".join(loc[1:])) if len(loc) > 1 else ("request", ".".join(loc))
        first_field = first_field or name
        got = err.get("input")
        shown = f" (got {str(got)[:40]!r})" if isinstance(got, str | int | float) else ""
        kind = {"query": "query parameter", "path": "path parameter"}.get(where, where)
        problems.append(f"{kind} `{name}`: {err.get('msg', 'invalid')}{shown}")
    return _json(400, error_body(400, "; ".join(problems) + " (see /openapi.json)",
                                 first_field))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path} (see /openapi.json)"
    elif exc.status_code == 405:
        allowed = _allowed_methods(request) or (exc.headers or {}).get("Allow", "")
        exc.headers = {**(exc.headers or {}), "Allow": allowed}
        message = (f"method {request.method} not allowed on {request.url.path}: {allowed} "
                   "only (see /openapi.json)")
    return _json(exc.status_code, error_body(exc.status_code, message), exc.headers)


def _allowed_methods(request: Request) -> str:
    """Every method the app serves on this path (Starlette names only the first route's, and
    /rollouts has GET and POST as two routes): each method asked of the router."""
    from starlette.routing import Match

    allowed = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return ", ".join(allowed)


async def _store_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StoreError)
    status = store_error_status(exc)
    headers = {"Retry-After": "5"} if status == 503 else None
    return _json(status, error_body(status, str(exc)), headers)


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    # A database error the store did not classify: the first line of the driver's message only
    # (SQLAlchemy's full text carries the statement and its parameters).
    orig = str(getattr(exc, "orig", None) or type(exc).__name__).strip().splitlines()
    log.error("%s %s: database error %s: %s", request.method, request.url.path,
              type(exc).__name__, orig[0] if orig else "")
    return _json(503, error_body(503, f"database error: {orig[0] if orig else 'unknown'}; "
                                      "retry later"), {"Retry-After": "5"})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return _json(500, error_body(500, "internal error (logged by the engine)"))


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=TITLE, version="1", description=DESCRIPTION, routes=app.routes)
    for path in doc["paths"].values():
        for op in path.values():
            op.get("responses", {}).pop("422", None)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    app.openapi_schema = doc
    return doc
