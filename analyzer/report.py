"""The report of one rollout: an HTML page with PNG plots, readable without the tool.

Plots (matplotlib, Agg): canary weight over time with decisions marked; error rate per version;
latency quantile estimates per version (interpolated from buckets: estimates); each check's
estimate with its anytime-valid confidence sequence; each check's evidence (e-value) against
its threshold. Below the plots: every tick's decision and sentence, and the policy used
(secrets redacted).
"""

from __future__ import annotations

import html
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from analyzer.store import Store, TickRow
from analyzer.types import Histogram

_DECISION_COLOURS = {"promote": "tab:green", "rollback": "tab:red", "pause": "tab:orange"}
_SECRET_KEYS = ("url", "headers", "address")


def _quantile(hist: dict[str, Any] | None, q: float) -> float | None:
    """Linear interpolation inside the bucket holding quantile q (an estimate)."""
    if not hist:
        return None
    h = Histogram.from_json(hist)
    total = h.total
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_c = 0.0, 0
    for le, c in zip(h.le, h.counts, strict=True):
        if c >= rank:
            if math.isinf(le):
                return prev_le
            width = c - prev_c
            frac = (rank - prev_c) / width if width else 0.0
            return prev_le + (le - prev_le) * frac
        prev_le, prev_c = le, c
    return None


def _redact(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, key) for v in value]
    if key == "headers":
        return "<redacted>"
    if isinstance(value, str) and key in _SECRET_KEYS and value.startswith("http"):
        from analyzer.notify import redact_http_url

        return redact_http_url(value)
    return value


def _series(ticks: list[TickRow]) -> dict[str, Any]:
    out: dict[str, Any] = {"t": [], "weight": [], "err": {"stable": [], "canary": []},
                           "p50": {"stable": [], "canary": []},
                           "p99": {"stable": [], "canary": []},
                           "checks": {}, "decisions": []}
    for tick in ticks:
        t = tick.t1 or tick.scheduled_at
        out["t"].append(t)
        out["weight"].append(tick.weight_after)
        samples = tick.samples or {}
        for version in ("stable", "canary"):
            v = samples.get(version) or {}
            req, err = v.get("requests"), v.get("errors")
            out["err"][version].append(100 * err / req if req else math.nan)
            for q, key in ((0.5, "p50"), (0.99, "p99")):
                est = _quantile(v.get("latency"), q)
                out[key][version].append(1000 * est if est is not None else math.nan)
        for verdict in tick.verdicts or []:
            c = out["checks"].setdefault(verdict["name"], {"t": [], "est": [], "lo": [],
                                                           "hi": [], "e": [], "thr": None})
            ci = verdict.get("ci") or [None, None]
            c["t"].append(t)
            c["est"].append(_num(verdict.get("estimate")))
            c["lo"].append(_num(ci[0]))
            c["hi"].append(_num(ci[1]))
            c["e"].append(_num(verdict.get("evidence")))
        if tick.decision in _DECISION_COLOURS:
            out["decisions"].append((t, tick.decision))
    return out


def _num(x: Any) -> float:
    try:
        return float(x) if x is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def _mark_decisions(ax: Any, decisions: list[tuple[datetime, str]]) -> None:
    for t, d in decisions:
        ax.axvline(t, color=_DECISION_COLOURS[d], alpha=0.5, linestyle="--", linewidth=1)


def _save(fig: Any, path: Path) -> str:
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


def _plots(s: dict[str, Any], out_dir: Path, alpha: float) -> list[tuple[str, str]]:
    figs: list[tuple[str, str]] = []
    fig, ax = plt.subplots(figsize=(9, 3))
    ax.step(s["t"], s["weight"], where="post", color="tab:blue")
    _mark_decisions(ax, s["decisions"])
    ax.set_ylabel("canary weight %")
    ax.set_ylim(-5, 105)
    ax.set_title("Canary weight (dashed: promote green, rollback red, pause orange)")
    figs.append(("Weight over time", _save(fig, out_dir / "weight.png")))

    fig, ax = plt.subplots(figsize=(9, 3))
    for version, colour in (("stable", "tab:gray"), ("canary", "tab:purple")):
        ax.plot(s["t"], s["err"][version], label=version, color=colour, marker=".")
    _mark_decisions(ax, s["decisions"])
    ax.set_ylabel("error rate % (per tick)")
    ax.legend()
    ax.set_title("Error rate per version")
    figs.append(("Error rate", _save(fig, out_dir / "error-rate.png")))

    fig, ax = plt.subplots(figsize=(9, 3))
    for version, colour in (("stable", "tab:gray"), ("canary", "tab:purple")):
        ax.plot(s["t"], s["p50"][version], label=f"{version} p50", color=colour, linestyle=":")
        ax.plot(s["t"], s["p99"][version], label=f"{version} p99", color=colour)
    _mark_decisions(ax, s["decisions"])
    ax.set_ylabel("ms (estimated from buckets)")
    ax.legend(fontsize=8)
    ax.set_title("Latency quantiles per version (interpolated: estimates)")
    figs.append(("Latency", _save(fig, out_dir / "latency.png")))

    for name, c in s["checks"].items():
        if all(math.isnan(x) for x in c["est"]) and all(math.isnan(x) for x in c["e"]):
            continue
        fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
        a1.plot(c["t"], c["est"], color="tab:blue", label="estimate")
        a1.fill_between(c["t"], c["lo"], c["hi"], color="tab:blue", alpha=0.2,
                        label="confidence sequence")
        a1.axhline(1.0, color="black", linewidth=0.5)
        a1.set_ylabel("canary / stable")
        a1.legend(fontsize=8)
        a1.set_title(f"Check {name}: estimate and evidence")
        e = [x if x > 0 else math.nan for x in c["e"]]
        a2.plot(c["t"], e, color="tab:red", label="evidence")
        a2.axhline(1 / alpha, color="black", linestyle="--", linewidth=0.8, label="1/alpha")
        if any(not math.isnan(x) for x in e):
            a2.set_yscale("log")
        a2.set_ylabel("e-value / evidence")
        a2.legend(fontsize=8)
        _mark_decisions(a1, s["decisions"])
        _mark_decisions(a2, s["decisions"])
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
        figs.append((f"Check {name}", _save(fig, out_dir / f"check-{safe}.png")))
    return figs


def write_report(store: Store, rollout_id: int, out_dir: Path) -> Path:
    """Write `index.html` and its PNG plots for one rollout into `out_dir`; return the HTML."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rollout = store.get(rollout_id)
    ticks = store.ticks(rollout_id)
    policy = rollout.load_policy()
    series = _series(ticks)
    figs = _plots(series, out_dir, policy.spec.decision.alpha)
    rows = "\n".join(
        "<tr><td>{}</td><td>{}</td><td>{}&rarr;{}%</td><td>{}</td><td>{}</td></tr>".format(
            t.seq, html.escape((t.t1 or t.scheduled_at).strftime("%Y-%m-%d %H:%M:%S")),
            t.weight_before, t.weight_after, html.escape(t.decision or t.action),
            html.escape(t.reason))
        for t in ticks
    )
    images = "\n".join(
        f'<h3>{html.escape(title)}</h3><img src="{html.escape(name)}" alt="{html.escape(title)}">'
        for title, name in figs
    )
    policy_json = json.dumps(_redact(rollout.policy), indent=2, default=str)
    final = ticks[-1].reason if ticks else "no ticks yet"
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Rollout {html.escape(rollout.name)}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 6px}}
pre{{background:#f6f6f6;padding:1em;overflow:auto}}</style></head><body>
<h1>Rollout {html.escape(rollout.name)} #{rollout.generation}</h1>
<p>{html.escape(rollout.stable_version)} &rarr; {html.escape(rollout.canary_version)}:
<b>{html.escape(str(rollout.phase))}</b> at weight {rollout.state.weight}% after {len(ticks)}
ticks. Last decision: {html.escape(final)}</p>
<p>Router: {html.escape(policy.spec.router.provider)}; strategy:
{html.escape(policy.spec.strategy.type)}; alpha {policy.spec.decision.alpha}.
Evidence is an e-value: a check decides when it reaches 1/alpha divided by its share of alpha.
Latency quantiles are interpolated from histogram buckets (estimates).</p>
{images}
<h2>Decisions</h2>
<table><tr><th>tick</th><th>time (UTC)</th><th>weight</th><th>decision</th><th>reason</th></tr>
{rows}
</table>
<h2>Policy used</h2>
<pre>{html.escape(policy_json)}</pre>
</body></html>
"""
    path = out_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
