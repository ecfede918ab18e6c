"""The HTTP client of the Prometheus source: prometheus-api-client with bounded retries and
errors that say what failed (never with a password in the address).
"""

from __future__ import annotations

import ast
import json
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from analyzer.util.redaction import mask_userinfo
from analyzer.util.retry import retrying


class QueryFailed(Exception):
    def __init__(self, reason: str, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class PrometheusClient:
    """prometheus-api-client with bounded retries (analyzer.util.retry; urllib3's own are turned
    off so that one place decides what is retried and how often)."""

    def __init__(
        self, address: str, headers: Mapping[str, str], timeout: float, retries: int,
        session: requests.Session | None = None, sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.address = address.rstrip("/")
        # reasons are recorded in the store and shown in reports: never with a password
        self.shown_address = mask_userinfo(self.address)
        self.timeout = timeout
        self.retries = retries
        self.sleep = sleep
        self.sent = 0
        self._prom = PrometheusConnect(
            url=self.address, headers=dict(headers) or None,
            retry=Retry(total=0, raise_on_status=False), session=session, timeout=timeout,
        )

    def query(self, promql: str, at: float) -> list[dict[str, Any]]:
        params = {"time": f"{at:.3f}", "timeout": f"{self.timeout:g}s"}
        return self._with_retries(lambda: self._prom.custom_query(promql, params=params))

    def query_range(self, promql: str, start: int, end: int) -> list[dict[str, Any]]:
        step = str(max(end - start, 1))
        return self._with_retries(lambda: self._prom.custom_query_range(
            promql, datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC), step,
            params={"timeout": f"{self.timeout:g}s"},
        ))

    def label_values(self, label: str, match: str, start: int, end: int) -> list[str]:
        """The values of `label` among the series matching `match` in [start, end] (an index
        look-up: /api/v1/label/<label>/values)."""
        params = {"match[]": match, "start": str(start), "end": str(end)}
        return [str(v) for v in self._with_retries(
            lambda: self._prom.get_label_values(label, params=params))]

    def _with_retries(self, call: Callable[[], Any]) -> list[dict[str, Any]]:
        retryer = retrying(attempts=self.retries + 1, first_wait=0.2, max_wait=2.0,
                           retry_if=lambda e: isinstance(e, QueryFailed) and e.retryable,
                           sleep=self.sleep)
        try:
            result: list[dict[str, Any]] = retryer(self._once, call)
        except QueryFailed as e:
            tries = retryer.statistics.get("attempt_number", 1)
            suffix = f" (after {tries} attempts)" if tries > 1 else ""
            raise QueryFailed(e.reason + suffix, False) from None
        return result

    def _once(self, call: Callable[[], Any]) -> list[dict[str, Any]]:
        """One HTTP call; every failure becomes a QueryFailed that says whether to retry."""
        self.sent += 1
        try:
            result = call()
        except PrometheusApiClientException as e:
            raise _classify_http_error(str(e)) from None
        except requests.Timeout:
            raise QueryFailed(f"timed out after {self.timeout:g}s", True) from None
        except requests.ConnectionError as e:
            if "timed out" in str(e).lower():  # urllib3 wraps read timeouts this way
                raise QueryFailed(f"timed out after {self.timeout:g}s", True) from None
            raise QueryFailed(f"cannot connect to {self.shown_address} ({_short(e)})",
                              True) from None
        except (requests.RequestException, ValueError, KeyError) as e:
            raise QueryFailed(f"bad answer from {self.shown_address}: {_short(e)}",
                              True) from None
        if not isinstance(result, list):
            raise QueryFailed("unexpected answer (no result list)", True)
        return result


def _short(e: BaseException) -> str:
    text = str(e)
    m = re.search(r"\[Errno -?\d+\] [^'\")\]]+|Connection refused|Read timed out", text)
    return m.group(0) if m else text[:200]


def _classify_http_error(text: str) -> QueryFailed:
    m = re.match(r"HTTP Status Code (\d+) \((.*)\)\s*$", text, re.S)
    if not m:
        return QueryFailed(text[:300], True)
    status = int(m.group(1))
    body = m.group(2)
    detail = body[:300]
    try:
        raw = ast.literal_eval(body)
        doc = json.loads(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw)
        detail = f"{doc.get('errorType', 'error')}: {doc.get('error', '')}".strip()
    except (ValueError, SyntaxError, AttributeError, TypeError):
        pass
    # 4xx other than 429 is the query's own fault (bad PromQL): retrying cannot help.
    retryable = status >= 500 or status in (408, 429)
    return QueryFailed(f"HTTP {status}: {detail}", retryable)
