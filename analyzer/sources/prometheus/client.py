"""The HTTP client of the Prometheus source: prometheus-api-client with bounded retries and
errors that say what failed (never with a password in the address).

Instant queries, the engine's every tick, go as a POST form (`/api/v1/query` takes both)
prepared once per call and sent through the prometheus-api-client session: the PromQL travels
in the body, so the long selector of a shared query is not built into a URL that requests and
urllib3 then parse and re-encode (3.8 % of a tick's CPU), and the proxy, TLS and CA settings
of the environment are resolved once per client, not per request. The answer is decoded with
orjson. Range queries and label look-ups use the library's own calls.
"""

from __future__ import annotations

import ast
import json
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
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
        self._query_url = f"{self._prom.url}/api/v1/query"
        self._send_options: dict[str, Any] | None = None

    def query(self, promql: str, at: float) -> list[dict[str, Any]]:
        form = {"query": promql, "time": f"{at:.3f}", "timeout": f"{self.timeout:g}s"}
        return self._with_retries(lambda: self._post_query(form))

    def _post_query(self, form: Mapping[str, str]) -> list[dict[str, Any]]:
        """One instant query as a POST form through the library's session (see the module
        docstring); a non-200 answer raises as the library's own calls do."""
        prom = self._prom
        session = prom._session
        if self._send_options is None:
            self._send_options = session.merge_environment_settings(
                self._query_url, {}, None, session.verify, session.cert)
        request = requests.Request("POST", self._query_url, data=form, headers=prom.headers,
                                   auth=prom.auth)
        response = session.send(session.prepare_request(request), timeout=self.timeout,
                                allow_redirects=True, **self._send_options)
        if response.status_code != 200:
            raise PrometheusApiClientException(
                f"HTTP Status Code {response.status_code} ({response.content!r})")
        try:
            result: list[dict[str, Any]] = orjson.loads(response.content)["data"]["result"]
        except orjson.JSONDecodeError as e:
            raise ValueError(f"the answer is not JSON ({e})") from None
        return result

    def query_range(self, promql: str, start: int, end: int,
                    step: int | None = None) -> list[dict[str, Any]]:
        """`promql` evaluated at start, start + step, ... end (default step: end - start, so
        at both ends only)."""
        every = str(step if step is not None else max(end - start, 1))
        return self._with_retries(lambda: self._prom.custom_query_range(
            promql, datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC), every,
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
        except (requests.RequestException, ValueError, KeyError, TypeError) as e:
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
