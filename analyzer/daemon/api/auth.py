"""The write API's bearer token: constant-time comparison, and the refusals as HTTP answers.

Write calls are refused with 403 when no token is configured (`CANARY_API_TOKEN` or
`--api-token-file`) and with 401 when the `Authorization: Bearer <token>` header is missing or
wrong. The token is compared with `hmac.compare_digest` and never logged.
"""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request

WWW_AUTHENTICATE = 'Bearer realm="canary-analyzer"'


def check_token(header: str | None, token: str | None) -> int:
    """HTTP status for a write call: 0 when allowed, 403 without a configured token, 401
    when the bearer token is missing or wrong (constant-time comparison)."""
    if not token:
        return 403
    if not header or not header.startswith("Bearer "):
        return 401
    given = header[len("Bearer "):].strip().encode()
    return 0 if hmac.compare_digest(given, token.encode()) else 401


def require_token(request: Request) -> None:
    """FastAPI dependency of every write route: raises the 401/403 answer."""
    status = check_token(request.headers.get("authorization"), request.app.state.api.token)
    if status == 403:
        raise HTTPException(403, "write API disabled: start `canary run` with CANARY_API_TOKEN "
                                 "set (or --api-token-file)")
    if status == 401:
        raise HTTPException(401, "missing or wrong bearer token (header `Authorization: "
                                 "Bearer <token>`)",
                            headers={"WWW-Authenticate": WWW_AUTHENTICATE})
