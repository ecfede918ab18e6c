"""The decision-quality script's suite and output (the full run is `make bench`)."""

from __future__ import annotations

import csv
from pathlib import Path

from rich.console import Console

from analyzer.offline.montecarlo import Scenario, simulate_rollouts
from benchmarks import decision_quality as dq
from benchmarks import dq_report


def test_the_suite_covers_the_issue() -> None:
    cells = dq.suite()
    names = [c.scenario.name for c in cells]
    assert len(set(names)) == len(names)  # names seed the random streams
    assert sum(n.startswith("A/A canary") and "rps, errors" in n for n in names) == 12
    for c in cells:  # the group says what is right: promoting, nothing, rolling back
        want = {"healthy": "healthy", "boundary": "boundary", "regression": "regression"}
        assert c.group == "outside" or c.scenario.truth == want[c.group], c.scenario.name
    for want in ("errors x1.5", "errors x2", "errors x3", "errors x5", "latency p99 +10%",
                 "latency p99 +30%", "latency p99 +100%", "latency median +50%",
                 "errors x2 above 25% weight", "A/A bursty errors (b=0.5)"):
        assert want in names
    # issue 17: boundary cells, Poisson and bursty; bursts CV 1.2-1.5; latency noise with the
    # distribution test; overlapping windows that overlap for real
    boundary = [c.scenario for c in cells if c.group == "boundary"]
    assert any(s.burstiness == 0 and s.window_intervals == 1 for s in boundary)
    assert {1.44, 2.25} <= {s.burstiness for s in boundary}
    assert any(s.window_intervals == 4 for s in boundary)
    assert {1.44, 2.25} <= {c.scenario.burstiness for c in cells if c.group == "healthy"}
    noisy = [c for c in cells if c.scenario.latency_noise > 0]
    assert noisy and all(c.policy == "distribution" for c in noisy)
    assert all(dq.reference_policy(c.policy).spec.checks for c in cells)
    assert any(c.scenario.diurnal_amplitude > 0 for c in cells)
    # our opt-ins are measured where they matter
    variants = {v for c in cells for v in c.variants}
    assert variants == set(dq.OURS_VARIANTS)


def test_policies_and_the_gating_classic_refusal() -> None:
    ref = dq.reference_policy()
    assert ref.spec.decision.beta == 0.05 and ref.spec.strategy.ramp == "strict"
    assert dq.reference_policy(judge="ours-ramp").spec.strategy.ramp == "risk-budgeted"
    assert dq.reference_policy(judge="ours-step").spec.decision.promotionEvidence == "step"
    assert dq.reference_policy(judge="ours-warmup").spec.analysis.burstWarmup == 3
    assert dq.reference_policy("distribution").spec.checks[1].distribution  # type: ignore[union-attr]
    assert "classic tests cannot gate" in dq.gating_classic_refusal()


def test_table_csv_goals_and_results_section(tmp_path: Path) -> None:
    policy = dq.reference_policy()
    cells = [dq.Cell(Scenario("aa", rps=400, error_rate=0.001, regression=False), "healthy"),
             dq.Cell(Scenario("edge", rps=400, error_rate=0.01, error_multiplier=1.25,
                              boundary=True), "boundary"),
             dq.Cell(Scenario("bad", rps=400, error_rate=0.01, error_multiplier=5.0),
                     "regression")]
    summaries = {}
    for ci, cell in enumerate(cells):
        for j in ("ours", "oracle"):
            summaries[(ci, j)] = simulate_rollouts(policy, cell.scenario, 8, seed=1,
                                                   judge_factory=dq.make_factory(j, cell.scenario))
    run = dq_report.Run(cells=cells, summaries=summaries, seed=1, runs_aa=8, runs=8, workers=1,
                        wall=1.0, cpu={"ours": 1.0, "oracle": 0.1},
                        ticks={"ours": 100, "oracle": 100}, total_runs=48, alpha=0.01,
                        beta=0.05, refusal="refused")
    rows = dq_report.rows(run)
    assert [r["judge"] for r in rows] == ["ours", "oracle"] * 3
    assert rows[0]["false_rollback_rate"] is not None and rows[0]["detection_rate"] is None
    assert rows[2]["false_rollback_rate"] is not None  # at the boundary: both errors count
    assert rows[2]["false_promotion_rate"] is not None
    assert rows[4]["detection_rate"] == 1.0 and rows[4]["false_rollback_rate"] is None
    dq_report.write_csv(rows, tmp_path / "t.csv")
    with (tmp_path / "t.csv").open() as f:
        got = list(csv.DictReader(f))
    assert len(got) == 6 and got[5]["judge"] == "oracle"
    md = dq_report.markdown_table(rows, 0.01, 0.05)
    assert md.count("\n") == 7 and "| bad | regression |" in md
    text = "\n".join(dq_report.goals(run))
    assert "- aa:" in text and "- edge:" in text and "- bad:" in text
    assert "MISSED" in text or "met" in text

    results = tmp_path / "RESULTS.md"
    results.write_text("# R\n\nhand-written intro\n\n<!-- BEGIN throughput (generated) -->\nT\n"
                       "<!-- END throughput -->\n\nnotes\n")
    dq_report.replace_section(results, "decision_quality", "first")
    dq_report.replace_section(results, "decision_quality", "second")
    dq_report.replace_section(results, "throughput", "T2")
    text = results.read_text()
    assert "second" in text and "first" not in text and "T2" in text
    assert "hand-written intro" in text and "notes" in text
    with open(tmp_path / "log", "w") as log:
        dq_report.write(run, tmp_path / "out", Console(file=log), quick=True)
    assert (tmp_path / "out" / "decision_quality-quick.md").read_text().count("| **ours") == 3
