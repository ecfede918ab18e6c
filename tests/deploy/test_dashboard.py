"""The Grafana dashboard queries only metrics (and labels) the engine exports on /metrics."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

from analyzer.daemon.metrics import EngineMetrics
from tests.support import requires

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "canary-analyzer.json"

# Words in PromQL that look like identifiers but are not metric names.
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "and", "or", "unless", "offset", "inf", "nan",
}


def _exported() -> dict[str, set[str]]:
    """Sample name -> label names, from the text exposition of an EngineMetrics with a value
    recorded on every metric (so labelled families export samples)."""
    m = EngineMetrics()
    for attr in vars(m).values():
        if not isinstance(attr, Counter | Gauge | Histogram):
            continue
        names = attr._labelnames  # prometheus_client keeps no public accessor
        child = attr.labels(**{n: "x" for n in names}) if names else attr
        if isinstance(attr, Counter):
            child.inc()
        elif isinstance(attr, Gauge):
            child.set(1)
        else:
            child.observe(0.2)
    m.set_state("r1", "progressing")
    out: dict[str, set[str]] = {}
    for fam in text_string_to_metric_families(m.render().decode()):
        for s in fam.samples:
            out.setdefault(s.name, set()).update(s.labels)
    return out


def _queries(node: Any) -> list[str]:
    """Every PromQL expression in the dashboard (panel targets and query variables)."""
    out: list[str] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("expr", "definition") and isinstance(v, str):
                out.append(v)
            else:
                out += _queries(v)
    elif isinstance(node, list):
        for v in node:
            out += _queries(v)
    return out


def _grafana_to_promql(expr: str) -> str:
    """Replace Grafana's macros and variables so the expression is plain PromQL."""
    m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", expr.strip())
    if m:
        return m.group(1)
    return (expr.replace("$__rate_interval", "1m").replace("$__interval", "1m")
            .replace('"$rollout"', '".*"'))


def metric_selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names used in its matcher) for each selector in an expression."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals out
    e = re.sub(r"\[[^\]]*\]", "", e)  # range selectors out
    # grouping clauses out: by (...), without (...), on (...), ignoring (...), group_x (...)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    out: list[tuple[str, set[str]]] = []
    for m in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?\s*(\()?", e):
        name, matcher, call = m.group(1), m.group(2), m.group(3)
        if call or name in PROMQL_WORDS:
            continue  # a function call or a keyword
        labels = set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", matcher or ""))
        out.append((name, labels))
    return out


def _grouping_labels(expr: str) -> set[str]:
    found = re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr)
    return {x.strip() for g in found for x in g.split(",") if x.strip()}


def test_dashboard_is_grafana_json() -> None:
    d = json.loads(DASHBOARD.read_text())
    assert d["title"] and d["uid"] and isinstance(d["schemaVersion"], int)
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        assert p["targets"], p["title"]
        assert set(p["gridPos"]) == {"x", "y", "w", "h"}
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24


def test_every_queried_metric_is_exported() -> None:
    exported = _exported()
    queries = _queries(json.loads(DASHBOARD.read_text()))
    assert len(queries) >= 10
    used: set[str] = set()
    for q in queries:
        sels = metric_selectors(_grafana_to_promql(q))
        assert sels, f"no metric found in {q!r}"
        for name, labels in sels:
            assert name in exported, f"{name!r} (in {q!r}) is not exported on /metrics"
            assert labels <= exported[name], f"{q!r}: labels {labels - exported[name]}"
            used.add(name)
        # labels a query groups by exist on some metric it reads
        have = set().union(*(exported[n] for n, _ in sels))
        assert _grouping_labels(q) <= have, f"{q!r} groups by a label no metric has"
    # the panels: states, weights, decisions, evidence, tick latency, data failures
    for must in ("canary_rollout_state", "canary_rollout_weight_percent",
                 "canary_decisions_total", "canary_check_evidence",
                 "canary_tick_duration_seconds_bucket", "canary_data_failures_total",
                 "canary_router_errors_total"):
        assert must in used, f"no panel shows {must}"


def test_metric_parser_is_not_blind() -> None:
    got = metric_selectors('sum by (le) (rate(foo_bucket{job="a",x=~"b"}[5m])) / bar')
    assert got == [("foo_bucket", {"job", "x"}), ("bar", set())]
    assert "canary_nope_total" not in _exported()


def test_queries_parse_with_promtool(tmp_path: Path) -> None:
    """The real PromQL parser (promtool check rules) accepts every expression."""
    promtool = requires.binary("promtool")
    queries = _queries(json.loads(DASHBOARD.read_text()))
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:q{i}", "expr": _grafana_to_promql(q)}
        for i, q in enumerate(queries)]}]}
    f = tmp_path / "rules.yaml"
    f.write_text(yaml.safe_dump(rules))
    out = subprocess.run([promtool, "check", "rules", str(f)], capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_evidence_panel_shows_both_e_values_by_kind() -> None:
    """canary_check_evidence is two labelled series per rate-ratio check (issue 22, item 10):
    the evidence panel plots the regression and the non-inferiority e-value, one line each."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    evidence = [p for p in panels if any("canary_check_evidence" in t["expr"]
                                         for t in p["targets"])]
    assert len(evidence) == 1
    (target,) = evidence[0]["targets"]
    assert 'kind=~"regression|non_inferiority"' in target["expr"]
    assert "kind" in _grouping_labels(target["expr"]) and "{{kind}}" in target["legendFormat"]
    assert "kind" in _exported()["canary_check_evidence"]
