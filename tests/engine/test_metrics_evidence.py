"""/metrics says which e-value it exports (issue 22, item 10): canary_check_evidence has a
`kind` label, and a rate-ratio check exports both its regression and its non-inferiority
e-value, the numbers its sentence prints."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from analyzer.daemon.engine import Engine, run_rollout

from .conftest import T0, make_policy


def test_rate_ratio_checks_export_both_e_values_by_kind(sqlite_store) -> None:
    engine = Engine(sqlite_store)
    policy = make_policy(name="web")
    run = run_rollout(policy, store=sqlite_store, engine=engine, start=T0, max_ticks=4)
    last = next(t for t in reversed(run.ticks) if t.verdicts)
    samples = {}
    for fam in text_string_to_metric_families(engine.metrics.render().decode()):
        for s in fam.samples:
            if s.name == "canary_check_evidence":
                samples[(s.labels["check"], s.labels["kind"])] = s.value
    rate_checks = [v for v in last.verdicts if "e_regression" in v["details"]]
    assert {v["name"] for v in rate_checks} >= {"error-rate"}
    for v in rate_checks:
        d = v["details"]
        assert samples[(v["name"], "regression")] == d["e_regression"]
        assert samples[(v["name"], "non_inferiority")] == d.get("e_ok", d["e_noninferiority"])
    srm = next(v for v in last.verdicts if v["name"] == "sample-ratio")
    assert samples[("sample-ratio", "sample_ratio_mismatch")] == srm["evidence"]
    assert {kind for _, kind in samples} <= {"regression", "non_inferiority",
                                             "sample_ratio_mismatch"}
