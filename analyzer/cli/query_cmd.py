"""`canary query`: run a policy's Prometheus queries for one window and show the counts.

For SREs checking a policy against their Prometheus: it prints the PromQL it ran and the exact
request / error counts and latency histogram totals per version (a table, or `--json`).
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from analyzer.cli.app import app
from analyzer.cli.common import load_policy_or_exit
from analyzer.cli.tables import Column, print_table, stdout_console
from analyzer.policy import PrometheusSource
from analyzer.util.times import parse_time

if TYPE_CHECKING:  # for annotations only: the commands import what they use when run
    from analyzer.core.types import Samples



def _fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.1f} ms"


@app.command()
def query(
    policy_file: Path = typer.Argument(..., help="the policy (spec.metrics.source: prometheus)"),
    prometheus: str | None = typer.Option(
        None, "--prometheus", help="Prometheus base URL; default: the policy's metrics.address"
    ),
    start: str = typer.Option("now-5m", "--start", help="window start (RFC 3339, Unix s, now-10m)"),
    end: str = typer.Option("now", "--end", help="window end"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Run the policy's queries for [START, END) and print the PromQL and per-version counts.

    Exit 1 when the source reports no data (the reason names the query).
    """
    out = stdout_console()
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    policy = load_policy_or_exit(policy_file)
    spec = policy.spec.metrics
    if not isinstance(spec, PrometheusSource):
        err.print(f"error: {policy_file}: spec.metrics.source is {spec.source}; `canary query` "
                  "needs source: prometheus")
        raise typer.Exit(1)
    if prometheus:
        if not re.match(r"^https?://\S+$", prometheus):
            err.print(f"error: --prometheus {prometheus!r} is not an http(s) URL")
            raise typer.Exit(2)
        spec = spec.model_copy(update={"address": prometheus})
    try:
        t0, t1 = parse_time(start), parse_time(end)
    except ValueError as e:
        err.print(f"error: {e}")
        raise typer.Exit(2) from None
    if t1 <= t0 or t1 - t0 < timedelta(seconds=1):
        err.print(f"error: --end ({t1.isoformat()}) must be at least 1s after --start "
                  f"({t0.isoformat()})")
        raise typer.Exit(2)

    from analyzer.sources.prometheus.source import (
        PrometheusConfigError,
        PrometheusMetricSource,
        QueryCoalescer,
    )

    try:
        source = PrometheusMetricSource(
            policy.model_copy(update={"spec": policy.spec.model_copy(update={"metrics": spec})}),
            coalescer=QueryCoalescer(), latency=True,
        )
    except PrometheusConfigError as e:
        err.print(f"error: {policy_file}: {e}")
        raise typer.Exit(1) from None
    samples = source.fetch(t0, t1)
    if as_json:
        typer.echo(json.dumps(_to_json(samples, spec.address), indent=2))
    else:
        _print(out, samples, spec.address, policy.spec.target.stable, policy.spec.target.canary)
    if not samples.ok:
        if not as_json:
            err.print(f"no data: {samples.no_data_reason}")
        raise typer.Exit(1)


def _to_json(s: Samples, address: str) -> dict[str, object]:
    from analyzer.core.stats.latency import interpolate_quantile

    data = s.to_json()
    data["prometheus"] = address
    for role in ("stable", "canary"):
        v = getattr(s, role)
        if v is not None and v.latency is not None:
            lat = data[role]["latency"]  # type: ignore[index]
            lat["p50_estimate_s"] = interpolate_quantile(v.latency, 0.5)
            lat["p99_estimate_s"] = interpolate_quantile(v.latency, 0.99)
    return data


def _print(out: Console, s: Samples, address: str, stable: str, canary: str) -> None:
    from analyzer.core.stats.latency import interpolate_quantile

    out.print(f"Prometheus {address}, window {s.t0.isoformat()} .. {s.t1.isoformat()}",
              markup=False)
    for i, q in enumerate(s.queries, 1):
        out.print(f"query {i}: {q}", markup=False)
    if s.stable is None and s.canary is None and not s.ok:
        return  # nothing came back; the caller prints the reason
    columns = [Column("version")] + [Column(c, justify="right") for c in (
        "requests", "errors", "error rate", "latency obs.", "p50 (est.)", "p99 (est.)")]
    rows = []
    for role, name in (("stable", stable), ("canary", canary)):
        v = getattr(s, role)
        if v is None:
            rows.append([f"{role} ({name})", "no series", "-", "-", "-", "-", "-"])
            continue
        rate = f"{100 * v.errors / v.requests:.3f}%" if v.requests else "-"
        lat = v.latency
        rows.append([
            f"{role} ({name})", str(v.requests), str(v.errors), rate,
            str(lat.total) if lat else "-",
            _fmt_s(interpolate_quantile(lat, 0.5)) if lat else "-",
            _fmt_s(interpolate_quantile(lat, 0.99)) if lat else "-",
        ])
    print_table(out, columns, rows,
                title="counts per version (exact, from counter values at the window's ends)")
