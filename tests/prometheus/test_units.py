"""Pure pieces of the Prometheus source: the raw-sample count, templates, times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from analyzer.cli.query_cmd import parse_time
from analyzer.policy import metrics as policy_metrics
from analyzer.sources.prometheus.exact import exact_from_raw
from analyzer.sources.prometheus.presets import PRESETS, get_preset
from analyzer.sources.prometheus.promql import render_template


def _series(labels: dict[str, str], pts: list[tuple[int, float]]) -> dict[str, object]:
    return {"metric": labels, "values": [[ts, str(v)] for ts, v in pts]}


def test_raw_count_handles_reset_new_and_gone_series() -> None:
    t0, t1 = 1000, 1060
    series = [
        # 100 -> 110 -> reset to 4 -> 9: 10 + 4 + 5
        _series({"version": "v1"}, [(990, 100), (1015, 110), (1030, 4), (1045, 9)]),
        # born in the window at 3: counts from 0
        _series({"version": "v1"}, [(1030, 3), (1060, 8)]),
        # vanished: 50 -> 52 then nothing
        _series({"version": "v2"}, [(995, 50), (1010, 52)]),
        # stopped long before the window: not part of it
        _series({"version": "v3"}, [(100, 7)]),
    ]
    counts, why = exact_from_raw(series, ["version"], t0, t1)
    assert why is None
    assert counts == {("v1",): 10 + 4 + 5 + 8, ("v2",): 2}


def test_raw_count_rejects_fractions() -> None:
    _, why = exact_from_raw([_series({}, [(990, 1.0), (1010, 1.5)])], [], 1000, 1060)
    assert why is not None and "not integers" in why


def test_templates_fill_only_known_placeholders() -> None:
    out = render_template('sum by ({version_label}) (m{a="{namespace}", b=~"{versions}"})',
                          {"version_label": "version", "namespace": "ns", "versions": "v1|v2"})
    assert out == 'sum by (version) (m{a="ns", b=~"v1|v2"})'
    assert render_template("m{x=\"{unknown}\"}", {}) == 'm{x="{unknown}"}'


def test_presets_are_complete() -> None:
    """The policy layer's view of the presets (names, gRPC statuses, latency) is the sources'."""
    assert set(PRESETS) == set(policy_metrics.PRESETS)
    assert {n for n, p in PRESETS.items() if p.error_matchers_non_ok} == set(
        policy_metrics.GRPC_PRESETS)
    assert {n for n, p in PRESETS.items() if p.latency_metric is None} == set(
        policy_metrics.NO_LATENCY)
    with pytest.raises(KeyError, match="known"):
        get_preset("consul")


def test_parse_time() -> None:
    now = datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert parse_time("now", now) == now
    assert parse_time("now-10m", now) == now - timedelta(minutes=10)
    assert parse_time("-1h", now) == now - timedelta(hours=1)
    assert parse_time("2024-05-01T11:00:00Z", now) == now - timedelta(hours=1)
    assert parse_time("1714564800", now) == now
