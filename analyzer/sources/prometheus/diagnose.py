"""Why a query found no series, in one sentence a user can act on: which of the rollout's
conditions has no series and which values that label has instead
(`no series with destination_version="v2"; values seen: ["v1"]`), then the preset's hints
about other exporter shapes (Knative >= 1.19, seldon-core-analytics, Envoy Gateway, ...).

Runs only on the no-data path. Each look-up is one `/api/v1/label/<name>/values` call with
`match[]` and the window (an index look-up: no samples are read); an explanation makes at
most `MAX_LOOKUPS` of them and shows at most `MAX_VALUES` values.

The method: drop the conditions one at a time (version, service, namespace, the policy's labels,
the preset's fixed matchers) and look up the dropped label's values among the series matching
the rest. The first look-up that finds values names the culprit: the condition's value is not
among them; or, when it is, the condition dropped before it names a label those series lack.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from analyzer.sources.prometheus.client import QueryFailed
from analyzer.sources.prometheus.presets import Hint, Matcher
from analyzer.sources.prometheus.promql import promql_string, render_matcher, render_selector
from analyzer.sources.prometheus.selection import Condition

MAX_VALUES = 10
MAX_LOOKUPS = 12

LabelValues = Callable[[str, str], list[str]]
"""(label name, series selector) -> the label's values among those series in the window."""


class _OutOfLookups(Exception):
    pass


class _Budget:
    def __init__(self, lookup: LabelValues, limit: int) -> None:
        self.lookup, self.left = lookup, limit

    def __call__(self, label: str, selector: str) -> list[str]:
        if self.left <= 0:
            raise _OutOfLookups
        self.left -= 1
        return sorted(set(self.lookup(label, selector)))


def shown(values: Sequence[str]) -> str:
    """`["v1", "v2"]`, at most MAX_VALUES of them."""
    head = json.dumps(list(values[:MAX_VALUES]), ensure_ascii=False)
    more = len(values) - MAX_VALUES
    return head + (f" and {more} more" if more > 0 else "")


def explain(
    metrics: Sequence[str], conditions: Sequence[Condition], hints: Sequence[Hint],
    namespace: str, lookup: LabelValues,
) -> str:
    """The reason, then every hint whose look-up finds values (in `namespace`); look-up
    failures are said, not raised."""
    budget = _Budget(lookup, MAX_LOOKUPS)
    said: list[str] = []
    try:
        said.append(_culprit(metrics, _resolved(metrics, conditions, budget), budget))
        for hint in hints:
            seen = sorted({v for match in hint.matches
                           for v in budget(hint.label, match.replace(
                               "{namespace}", promql_string(namespace)))})
            if seen:
                said.append(hint.says.replace("{values}", shown(seen)))
    except _OutOfLookups:
        said.append(f"(stopped after {MAX_LOOKUPS} label look-ups)")
    except QueryFailed as e:
        said.append(f"(could not look up label values: {e.reason})")
    return "; ".join(said)


def _resolved(
    metrics: Sequence[str], conditions: Sequence[Condition], lookup: _Budget
) -> list[Condition]:
    """A namespace held by either of two labels becomes a plain matcher on the one that has it
    (exported_<label> when any series has it there), so the look-ups around it can filter."""
    out: list[Condition] = []
    for c in conditions:
        if c.matchers or len(c.labels) != 2:
            out.append(c)
            continue
        exported, own = c.labels
        in_exported = Matcher(exported, c.wanted.op, c.wanted.value)
        used = exported if lookup(exported, render_selector(metrics, [in_exported])) else own
        m = Matcher(used, c.wanted.op, c.wanted.value)
        out.append(Condition(render_matcher(m), (used,), (m,), m))
    return out


def _culprit(metrics: Sequence[str], conditions: Sequence[Condition], lookup: _Budget) -> str:
    kept = list(conditions)
    previous: tuple[Condition, str] | None = None  # dropped, found nothing; where it looked
    for c in conditions:
        kept.remove(c)
        where = render_selector(metrics, [m for k in kept for m in k.matchers])
        seen = sorted({v for label in c.labels for v in lookup(label, where)})
        if seen and not any(c.wanted.matches(v) for v in seen):
            return f"no series with {c.text}; values seen: {shown(seen)}"
        if seen and previous is None:
            return (f"series with {c.text} exist around the window but none has a sample "
                    "inside it")
        if seen and previous is not None:
            p, p_where = previous
            return f"no series with {p.text}: the series of {p_where} have no {p.labels[0]} label"
        previous = (c, where)
    names = lookup("__name__", render_selector(metrics, []))
    if not names:
        return f"no series named {' or '.join(metrics)} in the window"
    if previous is not None:
        p, _ = previous
        return f"no series with {p.text}: no series of {' or '.join(names)} has a " \
               f"{p.labels[0]} label"
    return f"{' or '.join(names)} has series, but none matches the query"
