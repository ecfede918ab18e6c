"""The report of one rollout: an HTML page with PNG plots, readable without the tool.

Plots (matplotlib's object API: no pyplot, no global backend, safe in threads and notebooks):
canary weight over time; error rate per version; latency quantile
estimates per version (interpolated from buckets: estimates); per check, its estimate with its
anytime-valid confidence sequence and the tolerance, and its evidence (regression and
non-inferiority e-values) against the check's threshold. Promote, rollback and pause decisions
are marked on every plot. Below the plots: the outcome, events, every tick's decision and
sentence, and the policy used (secrets redacted).

`write_report(store, rollout_id, out_dir)` writes `index.html` and the PNGs into `out_dir`
(relative links: copy the directory anywhere). `rollout_series` (daemon/series.py, shared with
the dashboard) and `rollout_figures` are the same plots for notebooks.
"""

from __future__ import annotations

import html
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from matplotlib.figure import Figure

from analyzer.daemon.series import CheckSeries, RolloutSeries, rollout_series
from analyzer.daemon.store import Store
from analyzer.policy import Policy
from analyzer.util.redaction import redact_policy

DECISION_COLOURS = {"promote": "tab:green", "rollback": "tab:red", "pause": "tab:orange"}


def _mark_decisions(ax: Any, decisions: list[tuple[datetime, str]]) -> None:
    for t, d in decisions:
        ax.axvline(t, color=DECISION_COLOURS[d], alpha=0.5, linestyle="--", linewidth=1)


def _finish(fig: Figure) -> Figure:
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def _has_data(values: list[float]) -> bool:
    return any(not math.isnan(x) for x in values)


def rollout_figures(series: RolloutSeries, alpha: float = 0.05) -> list[tuple[str, str, Figure]]:
    """The report's figures as (title, file stem, Figure). Figures are not registered with
    pyplot: show one in a notebook with `display(fig)`, or `fig.savefig(path)`."""
    figs: list[tuple[str, str, Figure]] = []
    s = series
    fig = Figure(figsize=(9, 3))
    ax = fig.subplots()
    ax.step(s.t, s.weight, where="post", color="tab:blue")
    _mark_decisions(ax, s.decisions)
    ax.set_ylabel("canary weight %")
    ax.set_ylim(-5, 105)
    ax.set_title("Canary weight (dashed: promote green, rollback red, pause orange)")
    figs.append(("Weight over time", "weight", _finish(fig)))

    fig = Figure(figsize=(9, 3))
    ax = fig.subplots()
    for version, colour in (("stable", "tab:gray"), ("canary", "tab:purple")):
        ax.plot(s.t, s.err[version], label=version, color=colour, marker=".")
    _mark_decisions(ax, s.decisions)
    ax.set_ylabel("error rate % (per tick)")
    ax.legend()
    ax.set_title("Error rate per version")
    figs.append(("Error rate", "error-rate", _finish(fig)))

    fig = Figure(figsize=(9, 3))
    ax = fig.subplots()
    for version, colour in (("stable", "tab:gray"), ("canary", "tab:purple")):
        ax.plot(s.t, s.p50[version], label=f"{version} p50", color=colour, linestyle=":")
        ax.plot(s.t, s.p99[version], label=f"{version} p99", color=colour)
    _mark_decisions(ax, s.decisions)
    ax.set_ylabel("ms (estimated from buckets)")
    ax.legend(fontsize=8)
    ax.set_title("Latency quantiles per version (interpolated: estimates)")
    figs.append(("Latency", "latency", _finish(fig)))

    for name, c in s.checks.items():
        if not _has_data(c.est) and not _has_data(c.evidence):
            continue
        figs.append((f"Check {name}", "check-" + _safe(name), _check_figure(c, s, alpha)))
    return figs


def _check_figure(c: CheckSeries, s: RolloutSeries, alpha: float) -> Figure:
    fig = Figure(figsize=(9, 5))
    a1, a2 = fig.subplots(2, 1, sharex=True)
    a1.plot(c.t, c.est, color="tab:blue", marker=".", label="estimate")
    if _has_data(c.lo) or _has_data(c.hi):
        a1.fill_between(c.t, c.lo, c.hi, color="tab:blue", alpha=0.2,
                        label="confidence sequence (anytime-valid)")
    if _has_data(c.expected):
        a1.step(c.t, c.expected, where="post", color="black", linestyle="--", linewidth=1,
                label="expected: the router's canary weight")
    if c.kind == "e-value" and c.tolerance_ratio is not None:
        a1.axhline(1.0, color="black", linewidth=0.5)
        a1.axhline(c.tolerance_ratio, color="tab:red", linestyle=":", linewidth=1,
                   label=c.tolerance_label)
    elif c.kind == "failures" and c.threshold is not None:
        a1.axhline(c.threshold, color="tab:red", linestyle=":", linewidth=1,
                   label=f"max {c.threshold:g}")
    a1.set_ylabel(c.estimate_label)
    a1.legend(fontsize=8)
    a1.set_title(f"Check {c.name}: estimate and evidence")
    if c.kind == "failures":
        a2.step(c.t, c.evidence, where="post", color="tab:red", label=c.evidence_label)
        a2.set_ylabel("failures")
    elif c.kind == "p-value":
        a2.plot(c.t, c.evidence, color="tab:red", marker=".", label=c.evidence_label)
        a2.axhline(alpha, color="black", linestyle="--", linewidth=0.8, label="alpha")
        a2.set_yscale("log")
        a2.set_ylabel("p-value")
    else:
        e = [x if x > 0 else math.nan for x in c.evidence]
        a2.plot(c.t, e, color="tab:red", label=c.evidence_label)
        ok = [x if x > 0 else math.nan for x in c.e_ok]
        if _has_data(ok):
            a2.plot(c.t, ok, color="tab:green", label="non-inferiority e-value")
        thr = c.threshold if c.threshold else 1 / alpha
        a2.axhline(thr, color="black", linestyle="--", linewidth=0.8,
                   label=f"threshold {thr:g}")
        if _has_data(e) or _has_data(ok):
            a2.set_yscale("log")
        a2.set_ylabel("e-value")
    a2.legend(fontsize=8)
    _mark_decisions(a1, s.decisions)
    _mark_decisions(a2, s.decisions)
    return _finish(fig)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def policy_yaml(policy_doc: dict[str, Any]) -> str:
    """The policy as YAML with secrets redacted and unset (null) fields left out."""
    return yaml.safe_dump(redact_policy(policy_doc), sort_keys=False, default_flow_style=False)


def write_report(store: Store, rollout_id: int, out_dir: Path) -> Path:
    """Write `index.html` and its PNG plots for one rollout into `out_dir`; return the HTML."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rollout = store.get(rollout_id)
    ticks = store.ticks(rollout_id)
    policy: Policy = rollout.load_policy()
    images = []
    for title, stem, fig in rollout_figures(rollout_series(ticks), policy.spec.decision.alpha):
        name = f"{stem}.png"
        fig.savefig(out_dir / name, dpi=90)
        images.append(f'<h3>{html.escape(title)}</h3><img src="{html.escape(name)}" '
                      f'alt="{html.escape(title)}">')
    rows = "\n".join(
        "<tr><td>{}</td><td>{}</td><td>{}&rarr;{}%</td><td>{}</td><td>{}</td></tr>".format(
            t.seq, html.escape((t.t1 or t.scheduled_at).strftime("%Y-%m-%d %H:%M:%S")),
            t.weight_before, t.weight_after, html.escape(t.decision or t.action),
            html.escape(t.reason))
        for t in ticks
    )
    events = "\n".join(
        f"<li>{html.escape(e.at.strftime('%Y-%m-%d %H:%M:%S'))} <b>{html.escape(e.kind)}</b>: "
        f"{html.escape(e.message)}</li>"
        for e in store.events(rollout_id)
    )
    final = ticks[-1].reason if ticks else "no ticks yet"
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Rollout {html.escape(rollout.name)}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 6px}}
pre{{background:#f6f6f6;padding:1em;overflow:auto}}img{{max-width:100%}}</style></head><body>
<h1>Rollout {html.escape(rollout.name)} #{rollout.generation}</h1>
<p>{html.escape(rollout.stable_version)} &rarr; {html.escape(rollout.canary_version)}:
<b>{html.escape(str(rollout.phase))}</b> at weight {rollout.state.weight}% at tick
{ticks[-1].seq if ticks else 0} (started
{html.escape(rollout.created_at.strftime("%Y-%m-%d %H:%M:%S"))} UTC; tick numbers as in
<code>canary history</code>).
Last decision: {html.escape(final)}</p>
<p>Router: {html.escape(policy.spec.router.provider)}; strategy:
{html.escape(policy.spec.strategy.type)}; alpha {policy.spec.decision.alpha}.
Evidence is an e-value: a check rolls back when its regression e-value reaches its threshold
(1/alpha divided by its share of alpha) and counts as non-inferior when its non-inferiority
e-value does. The shaded band is the check's anytime-valid confidence sequence.
Latency quantiles are interpolated from histogram buckets (estimates).</p>
{chr(10).join(images)}
<h2>Events</h2>
<ul>{events}</ul>
<h2>Decisions</h2>
<table><tr><th>tick</th><th>time (UTC)</th><th>weight</th><th>decision</th><th>reason</th></tr>
{rows}
</table>
<h2>Policy used</h2>
<pre>{html.escape(policy_yaml(rollout.policy))}</pre>
</body></html>
"""
    path = out_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


__all__ = [
    "DECISION_COLOURS", "CheckSeries", "RolloutSeries", "policy_yaml", "rollout_figures",
    "rollout_series", "write_report",
]
