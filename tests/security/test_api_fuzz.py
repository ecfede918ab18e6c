"""The HTTP API under hostile input (hypothesis): whatever the method, path, query, headers or
body, the answer is a JSON error or a documented success, never a 500, never a traceback, and
the server keeps serving. Then an OpenAPI-driven pass of our own (schemathesis itself runs in
test_api_schemathesis.py): every documented operation, with generated parameters, answers
with a status its description lists, and 200 bodies validate against the documented schema."""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import quote, urlencode

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzer.daemon.api import ApiServer

from .conftest import TOKEN, generated_openapi

OPENAPI = generated_openapi()

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
segments = st.one_of(
    st.sampled_from(["rollouts", "secret-svc", "ticks", "promote", "abort", "pause", "resume",
                     "metrics", "healthz", "readyz", "openapi.json", "..", "%00", "%2e%2e",
                     "nope", "", "a" * 300]),
    st.text(max_size=12),
)
paths = st.lists(segments, min_size=0, max_size=4).map(
    lambda parts: "/" + "/".join(quote(p, safe="%.") for p in parts))
queries = st.dictionaries(st.sampled_from(["since", "limit", "full", "x"]),
                          st.one_of(st.integers(-10**12, 10**12).map(str), st.text(max_size=8)),
                          max_size=3)
auth = st.one_of(st.none(), st.just(f"Bearer {TOKEN}"), st.text(max_size=30),
                 st.just("Bearer "), st.just(f"bearer {TOKEN}"), st.just(f"Bearer {TOKEN}x"))
content_length = st.one_of(st.none(), st.sampled_from(["0", "-1", "abc", "99999999", "5"]))


def raw(server: ApiServer, method: str, target: str, headers: dict[str, str],
        body: bytes = b"") -> tuple[int, bytes, str]:
    host, port = server.address
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders(body or None)
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.getheader("Content-Type") or ""
    finally:
        conn.close()


def _clean_header(v: str) -> str:
    return "".join(ch for ch in v if 0x20 <= ord(ch) < 0x7F)


@FUZZ
@given(method=methods, path=paths, query=queries, authorization=auth, length=content_length,
       body=st.binary(max_size=64))
def test_hostile_requests_get_json_errors(api: ApiServer, method: str, path: str,
                                          query: dict[str, str], authorization: str | None,
                                          length: str | None, body: bytes) -> None:
    target = path + ("?" + urlencode(query) if query else "")
    headers: dict[str, str] = {}
    if authorization is not None:
        headers["Authorization"] = _clean_header(authorization)
    if length is not None and method != "HEAD":
        headers["Content-Length"] = length
        # send what is declared (a client that declares more and sends less just waits)
        body = (body + b"x" * 64)[: int(length)] if length.isdigit() and int(length) < 64 \
            else b""
    else:
        body = b""
    status, data, ctype = raw(api, method, target, headers, body)
    assert status < 500, (method, target, status, data[:300])
    assert b"Traceback" not in data
    text_ok = status == 200 and (path in ("/metrics", "/") or path.startswith("/ui/"))
    if method != "HEAD" and not text_ok:
        assert ctype.startswith("application/json"), (method, target, status, ctype, data[:200])
        doc = json.loads(data)
        if status >= 400:
            assert set(doc) >= {"error", "message"} and doc["message"], doc
    # The server still answers after whatever that was.
    assert raw(api, "GET", "/healthz", {})[0] == 200


@FUZZ
@given(data=st.data())
def test_openapi_operations_answer_as_documented(api: ApiServer, data: st.DataObject) -> None:
    path_t = data.draw(st.sampled_from(sorted(OPENAPI["paths"])), label="path")
    op_method, op = next(iter(OPENAPI["paths"][path_t].items()))
    path = path_t
    query: dict[str, str] = {}
    for p in op.get("parameters", []):
        if p["in"] == "path":
            value = data.draw(st.one_of(st.just("secret-svc"), st.text(min_size=1, max_size=20)),
                              label=p["name"])
            path = path.replace("{" + p["name"] + "}", quote(value, safe=""))
        elif data.draw(st.booleans(), label=f"send {p['name']}"):
            kind = next((s["type"] for s in p["schema"].get("anyOf", [p["schema"]])
                         if s.get("type") != "null"), "string")
            gen = {"integer": st.integers(-5, 10**6).map(str),
                   "boolean": st.sampled_from(["true", "false", "1", "0"])}.get(
                kind, st.text(max_size=5))
            query[p["name"]] = data.draw(gen, label=p["name"])
    headers = {"Authorization": f"Bearer {TOKEN}"} if op.get("security") and data.draw(
        st.booleans(), label="authorized") else {}
    target = path + ("?" + urlencode(query) if query else "")
    status, body, ctype = raw(api, op_method.upper(), target, headers)
    documented = {int(code) for code in op["responses"]}
    # 400 (a malformed parameter) and 404 (an unknown name) are always possible answers.
    assert status in documented | {400, 404}, (op_method, target, status, body[:300])
    if status == 200 and ctype.startswith("application/json"):
        schema = op["responses"]["200"].get("content", {}).get("application/json", {}).get(
            "schema")
        if schema is not None:
            jsonschema.validate(json.loads(body), _resolve(schema))


def _resolve(schema: Any) -> Any:
    """Inline `#/components/schemas/...` references (and drop OpenAPI's `nullable`)."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _resolve(OPENAPI["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]])
        out = {k: _resolve(v) for k, v in schema.items() if k != "nullable"}
        if schema.get("nullable") and "type" in out:
            out["type"] = [out["type"], "null"]
        return out
    if isinstance(schema, list):
        return [_resolve(v) for v in schema]
    return schema
