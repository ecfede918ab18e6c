"""The dashboard's files (analyzer/daemon/dashboard/: HTML, CSS, JavaScript; package data, no
CDN) served at `/` and `/ui/{file}`, read once at start-up. A strict Content-Security-Policy
lets the page load nothing from anywhere but this server."""

from __future__ import annotations

from importlib import resources
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import Response

ASSET_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
               ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}

router = APIRouter(include_in_schema=False)


def load_assets() -> dict[str, tuple[bytes, str]]:
    """Every dashboard file by name, with its content type."""
    out = {}
    for entry in resources.files("analyzer.daemon.dashboard").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in ASSET_TYPES:
            out[entry.name] = (entry.read_bytes(), ASSET_TYPES[suffix])
    return out


def _asset(request: Request, name: str) -> Response:
    assets: dict[str, tuple[bytes, str]] = request.app.state.assets
    if name not in assets:
        raise HTTPException(404, f"no dashboard file {name!r}")
    body, media_type = assets[name]
    return Response(body, media_type=media_type, headers=HEADERS)


@router.get("/")
async def index(request: Request) -> Response:
    return _asset(request, "index.html")


@router.get("/ui/{name}")
async def asset(request: Request, name: Annotated[str, Path(max_length=64)]) -> Response:
    return _asset(request, name)
