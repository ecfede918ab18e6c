"""Where a tick's CPU goes: for the throughput benchmark (benchmarks/throughput.py).

Owns two measurements of the engine's steady tick, made inside the engine process:
- `PartClock`: the CPU time of each part of a tick (the thread's own CPU clock around the
  engine's entry points: store read, commit, JSON encoding, Prometheus, judge, metrics), with
  an overhead of a few microseconds per call, so it runs during the measured rounds;
- `profile_round`: one more round under cProfile with the CPU clock, single-threaded: the top
  functions by own time. cProfile slows Python-heavy code unevenly, so its figures are shares,
  the part clock's are the milliseconds.
"""

from __future__ import annotations

import cProfile
import functools
import io
import pstats
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

# part -> (module, class or None, function names); JSON is inside the commit and is taken out
PARTS: dict[str, tuple[str, str | None, tuple[str, ...]]] = {
    "store read": ("analyzer.daemon.store.tickpath", "TickPath", ("tick_view",)),
    "commit (SQL)": ("analyzer.daemon.store.tickpath", "TickPath", ("commit_tick",)),
    "JSON encoding": ("analyzer.daemon.store.tickpath", None, ("dumps",)),  # as it imported it
    "Prometheus (query, parse, slice)": ("analyzer.sources.prometheus.source",
                                         "PrometheusMetricSource", ("fetch",)),
    "judge (evaluate, new step, state)": ("analyzer.core.judge", "Judge",
                                          ("evaluate", "start_step", "to_state", "from_state")),
    "metrics": ("analyzer.daemon.engine", "Engine", ("_after_commit",)),
}
TOTAL = ("analyzer.daemon.engine", "Engine", ("tick",))


class PartClock:
    """Thread CPU time per part of a tick, summed over every thread (see module docstring)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.ticks = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        self._undo: list[Callable[[], None]] = []

    def install(self) -> PartClock:
        import importlib

        for part, (module, cls, names) in [*PARTS.items(), ("total", TOTAL)]:
            owner: Any = importlib.import_module(module)
            if cls is not None:
                owner = getattr(owner, cls)
            for name in names:
                self._wrap(owner, name, part)
        return self

    def _wrap(self, owner: Any, name: str, part: str) -> None:
        original = getattr(owner, name)
        clock = self

        @functools.wraps(original)
        def timed(*a: Any, **k: Any) -> Any:
            depth = getattr(clock._local, part, 0)
            setattr(clock._local, part, depth + 1)
            t = time.thread_time()
            try:
                return original(*a, **k)
            finally:
                setattr(clock._local, part, depth)
                if depth == 0:  # nested calls (dumps inside dumps) count once
                    spent = time.thread_time() - t
                    with clock._lock:
                        clock.seconds[part] = clock.seconds.get(part, 0.0) + spent
                        if part == "total":
                            clock.ticks += 1

        setattr(owner, name, timed)
        self._undo.append(lambda: setattr(owner, name, original))

    def reset(self) -> None:
        with self._lock:
            self.seconds, self.ticks = {}, 0

    def uninstall(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()

    def per_tick_ms(self) -> dict[str, float]:
        """Milliseconds of CPU per tick by part, JSON taken out of the commit, the rest named."""
        n = max(self.ticks, 1)
        ms = {p: 1000 * s / n for p, s in self.seconds.items()}
        if "JSON encoding" in ms and "commit (SQL)" in ms:
            ms["commit (SQL)"] -= ms["JSON encoding"]
        total = ms.pop("total", 0.0)
        ms["engine (state machine, records, the rest)"] = total - sum(ms.values())
        ms["total"] = total
        return ms


def profile_round(ticks: Iterable[Callable[[], Any]], top: int = 12) -> dict[str, Any]:
    """Run `ticks` one after the other under cProfile (CPU clock); the top functions by own
    time: [(function, calls, own ms per tick, share of the profiled CPU)]."""
    profiler = cProfile.Profile(time.process_time)
    n = 0
    profiler.enable()
    for tick in ticks:
        tick()
        n += 1
    profiler.disable()
    stats = pstats.Stats(profiler, stream=io.StringIO())
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]  # type: ignore[attr-defined]
    out = []
    for (file, line, func), (_cc, nc, tt, _ct, _callers) in rows:
        where = file.split("site-packages/")[-1].split("/work/")[-1]
        for prefix in ("wt/fencing/", "main/"):
            where = where.removeprefix(prefix)
        out.append({"function": f"{where}:{line}({func})" if line else func, "calls_per_tick":
                    nc / max(n, 1), "own_ms_per_tick": 1000 * tt / max(n, 1),
                    "share": tt / total if total else 0.0})
    return {"ticks": n, "profiled_ms_per_tick": 1000 * total / max(n, 1), "top": out}
