"""Reading recorded rollouts back out of the store: finding one by id, name or name#generation,
and exporting its analysed intervals in `canary replay`'s JSONL format
(analyzer/sources/replay.py).

Used by `canary export`, `canary report`, `canary backtest` and the postmortem notebook.
Every analysis tick the engine committed carries the Samples it judged; each becomes one line,
oldest first, with the window's start `t0` and the engine's tick number `tick` written out, so
`canary replay` sees exactly the windows the engine saw (also after a late or missed tick) and
names each by the tick `canary history` shows. Ticks without a window (start, pause steps,
manual commands, finishing a promotion) have no line. The stable's pre-rollout intervals the
judge started from (recorded with the tick that created it) come first, as baseline lines.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from analyzer.core.types import Samples
from analyzer.daemon.store import NotFound, RolloutRecord, Store, StoreError, TickRow
from analyzer.sources.replay import parse_line

#: The fields of a replay line (Samples.to_json also has `queries`, which replay rejects).
REPLAY_FIELDS = ("t", "t0", "canary_weight", "stable", "canary", "no_data_reason")


class NothingToExport(StoreError):
    """The rollout has no analysed ticks yet."""


@dataclass(frozen=True)
class RecordedInterval:
    """One analysed tick as recorded: the Samples the judge saw and the committed tick row
    (what was decided then)."""

    samples: Samples
    tick: TickRow

    def to_replay_json(self) -> dict[str, Any]:
        """This interval as one replay line, with its tick number."""
        return {"tick": self.tick.seq, **to_replay_json(self.samples)}


def resolve_rollout(store: Store, ref: str | int) -> RolloutRecord:
    """A rollout by id (digits), name (its newest run) or name#generation. Raises NotFound
    (a StoreError) naming what was looked for."""
    if isinstance(ref, int):
        return store.get(ref)
    text = ref.strip()
    if text.isdigit():
        try:
            return store.get(int(text))
        except NotFound:
            pass  # a policy may be named "42"
    if "#" in text:
        name, _, gen = text.rpartition("#")
        if not gen.isdigit():
            raise NotFound(f"rollout {ref!r}: expected NAME#GENERATION with a number after #")
        for rec in store.list_rollouts(all_generations=True):
            if rec.name == name and rec.generation == int(gen):
                return rec
        raise NotFound(f"no rollout {name!r} with generation {gen} (canary status lists them)")
    try:
        return store.latest(text)
    except NotFound:
        raise NotFound(f"no rollout with id or name {ref!r} (canary status lists them)") from None


def replay_line(samples: dict[str, Any]) -> dict[str, Any]:
    """A stored Samples.to_json() as one replay line (without the queries)."""
    return {k: samples.get(k) for k in REPLAY_FIELDS}


def samples_from_json(data: dict[str, Any]) -> Samples:
    """Samples from a stored Samples.to_json() (validated as a replay line)."""
    t0, t1, fields = parse_line(replay_line(data), None)
    if t0 is None:
        raise ValueError("recorded samples without t0")
    return Samples(t0=t0, t1=t1, queries=tuple(data.get("queries") or ()), **fields)


def recorded_intervals(store: Store, rollout_id: int) -> list[RecordedInterval]:
    """The rollout's analysed ticks (those with samples), oldest first."""
    out: list[RecordedInterval] = []
    for row in store.ticks(rollout_id):
        if not row.samples or not row.samples.get("t") or not row.samples.get("t0"):
            continue
        s = samples_from_json(row.samples)
        if out and s.t1 <= out[-1].samples.t1:
            continue  # replay needs strictly increasing t; a re-evaluated window adds nothing
        out.append(RecordedInterval(s, row))
    return out


def recorded_baseline(ticks: list[TickRow]) -> list[dict[str, Any]]:
    """The baseline lines the engine recorded with the tick that created the rollout's judge
    (the stable's pre-rollout intervals it started from); [] for rollouts recorded before
    baselines were kept."""
    for row in ticks:
        lines = (row.samples or {}).get("baseline")
        if lines:
            return [dict(ln) for ln in lines]
    return []


def baseline_samples(store: Store, rollout_id: int) -> list[Samples]:
    """`recorded_baseline` as Samples (validated as replay lines)."""
    out = []
    for ln in recorded_baseline(store.ticks(rollout_id)):
        t0, t1, fields = parse_line(ln, None)
        if t0 is not None:
            out.append(Samples(t0=t0, t1=t1, **fields))
    return out


def to_replay_json(samples: Samples) -> dict[str, Any]:
    """One replay line for these samples."""
    return replay_line(samples.to_json())


def export_jsonl(store: Store, rollout_id: int) -> list[dict[str, Any]]:
    """The rollout's replay lines (dicts): its baseline lines, then its analysed intervals,
    oldest first."""
    intervals = recorded_intervals(store, rollout_id)
    return recorded_baseline(store.ticks(rollout_id)) + [r.to_replay_json() for r in intervals]


def write_jsonl(lines: Iterable[dict[str, Any]], fh: TextIO) -> int:
    """Write replay lines (dicts); return how many."""
    n = 0
    for line in lines:
        fh.write(json.dumps(line, separators=(",", ":")) + "\n")
        n += 1
    return n


def export_rollout(store: Store, rollout_id: int, path: str | Path) -> int:
    """Write the rollout's replay lines to `path` (baseline lines first); return how many
    analysed intervals. NothingToExport (a StoreError) when it has none."""
    if not recorded_intervals(store, rollout_id):
        rec = store.get(rollout_id)
        raise NothingToExport(f"rollout {rec.name}#{rec.generation} (id {rollout_id}) has no "
                              "analysed ticks yet: nothing to export")
    lines = export_jsonl(store, rollout_id)
    with open(path, "w", encoding="utf-8") as fh:
        write_jsonl(lines, fh)
    return sum(1 for ln in lines if not ln.get("baseline"))


__all__ = [
    "NothingToExport",
    "RecordedInterval",
    "baseline_samples",
    "export_jsonl",
    "export_rollout",
    "recorded_baseline",
    "recorded_intervals",
    "replay_line",
    "resolve_rollout",
    "samples_from_json",
    "to_replay_json",
    "write_jsonl",
]
