"""The decision-quality script's suite and output (the full run is `make bench`)."""

from __future__ import annotations

import csv
from pathlib import Path

from analyzer.offline.montecarlo import Scenario, simulate_rollouts
from benchmarks import decision_quality as dq


def test_the_suite_covers_the_issue() -> None:
    names = [s.name for s in dq.suite()]
    assert sum(n.startswith("A/A canary") for n in names) == 12  # 4 rates x 3 error rates
    assert all(not s.is_regression for s in dq.suite() if s.name.startswith("A/A"))
    for want in ("errors x1.2", "errors x1.5", "errors x2", "errors x5", "latency p99 +10%",
                 "latency p99 +30%", "latency p99 +100%", "latency median +50%",
                 "errors x2 above 25% weight", "A/A bursty errors (b=0.5)"):
        assert want in names
    assert any(s.diurnal_amplitude > 0 for s in dq.suite())
    assert len(set(names)) == len(names)  # names seed the random streams


def test_table_csv_and_results_section(tmp_path: Path) -> None:
    policy = dq.reference_policy()
    scenarios = [Scenario("aa", rps=400, error_rate=0.001, regression=False),
                 Scenario("bad", rps=400, error_rate=0.01, error_multiplier=5.0)]
    summaries = {}
    for si, sc in enumerate(scenarios):
        for j in ("flagger", "oracle"):
            summaries[(si, j)] = simulate_rollouts(policy, sc, 8, seed=1,
                                                   judge_factory=dq.make_factory(j, sc))
    rows = dq.rows(summaries, scenarios)
    assert [r["judge"] for r in rows] == ["flagger", "oracle"] * 2
    assert rows[0]["false_rollback_rate"] is not None and rows[0]["detection_rate"] is None
    assert rows[2]["detection_rate"] is not None
    dq.write_csv(rows, tmp_path / "t.csv")
    with (tmp_path / "t.csv").open() as f:
        got = list(csv.DictReader(f))
    assert len(got) == 4 and got[3]["judge"] == "oracle"
    md = dq.markdown_table(rows, 0.01)
    assert md.count("\n") == 5 and "| bad | regression |" in md

    results = tmp_path / "RESULTS.md"
    results.write_text("# R\n\nhand-written intro\n\n<!-- BEGIN throughput (generated) -->\nT\n"
                       "<!-- END throughput -->\n\nnotes\n")
    dq.replace_section(results, "decision_quality", "first")
    dq.replace_section(results, "decision_quality", "second")
    dq.replace_section(results, "throughput", "T2")
    text = results.read_text()
    assert "second" in text and "first" not in text and "T2" in text
    assert "hand-written intro" in text and "notes" in text
