"""Secrets out of everything a person reads: logs, status output, reports, recorded reasons.

One place decides what is secret so the API, the CLI, reports and the metric source agree:
webhook URLs keep only scheme and host (Slack puts the token in the path), addresses keep
everything but their password, header values are masked whole.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

MASK = "***"


def redact_http_url(url: str) -> str:
    """`https://hooks.slack.com/services/T0/B0/xyz?token=1` -> `https://hooks.slack.com/***`."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<url>"
    host = parts.hostname or "?"
    if port:
        host = f"{host}:{port}"
    tail = "/***" if (parts.path not in ("", "/") or parts.query) else ""
    return f"{parts.scheme}://{host}{tail}"


def mask_userinfo(url: str) -> str:
    """`http://user:pass@prom:9090` -> `http://user:***@prom:9090` (the address stays useful)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<url>"
    if password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username or ''}:{MASK}@{host}").geturl()


def redact_policy(policy: dict[str, Any]) -> dict[str, Any]:
    """A copy of a policy document safe to show.

    Walks the whole document rather than known paths, so a field added later is covered:
    every `headers` mapping has its values masked, every `url` is cut to its host, every
    `address` loses its password, and unset (null) fields are dropped.
    """
    return _walk(json.loads(json.dumps(policy, default=str)), "")


def _walk(value: Any, key: str) -> Any:
    if key == "headers" and isinstance(value, dict):
        return {k: MASK for k in value}
    if isinstance(value, dict):
        return {k: _walk(v, k) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_walk(v, key) for v in value]
    if isinstance(value, str) and key == "url" and "://" in value:
        return redact_http_url(value)
    if isinstance(value, str) and "://" in value and "@" in value:
        return mask_userinfo(value)
    return value


__all__ = ["MASK", "mask_userinfo", "redact_http_url", "redact_policy"]
