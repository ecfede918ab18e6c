"""The policy format: reference policies load, broken ones name file, line, field and fix."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from analyzer.cli.app import app
from analyzer.policy import (
    Policy,
    PolicyError,
    json_schema,
    load_policies,
    load_policy,
    parse_policy,
    read_yaml,
)
from analyzer.util.times import parse_duration

ROOT = Path(__file__).resolve().parents[2]
POLICIES = sorted((ROOT / "policies").glob("*.yaml"))
BROKEN = sorted((Path(__file__).parent / "broken").glob("*.yaml"))
EXPECT = re.compile(r"^# expect: (\d+) (\S+): (.*)$")

MINIMAL = """\
apiVersion: canary-analyzer.io/v1alpha1
kind: RolloutPolicy
metadata: {name: minimal}
spec:
  target: {service: web, stable: v1, canary: v2}
  router: {provider: dry-run}
  strategy: {steps: [10, 50]}
  metrics: {source: simulate}
"""


def test_every_provider_and_strategy_has_a_reference_policy() -> None:
    policies = [load_policy(p) for p in POLICIES]
    providers = {p.spec.router.provider for p in policies}
    assert providers >= {"istio", "nginx-ingress", "knative", "seldon", "kubernetes",
                         "gateway-api", "smi", "nginx"}
    strategies = {p.spec.strategy.type for p in policies}
    assert strategies == {"canary", "blue-green", "ab", "mirror"}
    assert any(p.spec.strategy.match and p.spec.strategy.match.header for p in policies)
    names = [p.name for p in policies]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.name)
def test_reference_policy_is_valid_and_commented(path: Path) -> None:
    policy = load_policy(path)
    assert isinstance(policy, Policy)
    comments = [line for line in path.read_text().splitlines() if "#" in line]
    assert len(comments) >= 3, f"{path.name} should explain itself to a new reader"


def test_defaults_are_careful() -> None:
    p = parse_policy(MINIMAL)
    s = p.spec
    assert s.decision.alpha == 0.01
    assert s.decision.onInconclusive == "pause" and s.decision.onDataFailure == "pause"
    assert s.analysis.interval == timedelta(seconds=30)
    assert s.analysis.minStepDuration == timedelta(minutes=2)
    assert s.metrics.source == "simulate" and not s.metrics.allowSimulatedMetrics
    assert [c.type for c in s.checks] == ["error-rate"]
    # steps stopping below 100 end with a full promotion
    assert s.strategy.weight_steps() == [10, 50, 100]


def test_metrics_are_required_and_simulate_only_drives_dry_run() -> None:
    """A policy never falls back to invented traffic, and invented traffic never moves a real
    router unless the policy says so."""
    with pytest.raises(PolicyError, match=r"spec\.metrics: required field is missing"):
        parse_policy(MINIMAL.replace("  metrics: {source: simulate}\n", ""))
    istio = MINIMAL.replace("{provider: dry-run}", "{provider: istio, virtualService: web, "
                            "stableHost: web-v1, canaryHost: web-v2}")
    with pytest.raises(PolicyError, match="router istio would move real traffic"):
        parse_policy(istio)
    allowed = parse_policy(istio.replace("{source: simulate}",
                                         "{source: simulate, allowSimulatedMetrics: true}"))
    assert allowed.spec.metrics.allowSimulatedMetrics


@pytest.mark.parametrize("field", ["tolerance: .inf", "tolerance: .nan", "weight: .inf",
                                   "weight: -.inf", "negligibleRate: .nan"])
def test_no_float_field_takes_inf_or_nan(field: str) -> None:
    with pytest.raises(PolicyError, match="finite number"):
        parse_policy(MINIMAL + f"  checks: [{{type: error-rate, {field}}}]\n")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("250ms", 0.25), (45, 45),
     ("2d", 172800), ("0s", 0)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["-5m", "5 minutes", "m5", "", "5mm", True, "1e9999s", None])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_step_weight_and_max_weight() -> None:
    text = MINIMAL.replace("{steps: [10, 50]}", "{stepWeight: 15, maxWeight: 50}")
    assert parse_policy(text).spec.strategy.weight_steps() == [15, 30, 45, 50, 100]


def test_canary_version_override_revalidates() -> None:
    p = parse_policy(MINIMAL).with_canary_version("v3")
    assert p.spec.target.canary == "v3"
    with pytest.raises(ValidationError, match="stable and canary must differ"):
        parse_policy(MINIMAL).with_canary_version("v1")  # same as stable


@pytest.mark.parametrize("path", BROKEN, ids=lambda p: p.name)
def test_broken_policy_names_line_field_and_problem(path: Path) -> None:
    m = EXPECT.match(path.read_text().splitlines()[0] if path.read_text() else "")
    assert m, f"{path.name} must start with '# expect: LINE PATH: MESSAGE'"
    line, field, message = int(m.group(1)), m.group(2), m.group(3)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    problems = info.value.problems
    assert all(p.file == str(path) for p in problems)
    matching = [p for p in problems if p.path == field or (field == "(document)" and not p.path)]
    assert matching, f"no problem at {field}: {[str(p) for p in problems]}"
    assert any(message in p.message and p.line == line for p in matching), (
        f"expected line {line} '{message}', got {[str(p) for p in matching]}"
    )


def test_broken_corpus_covers_the_issue_list() -> None:
    names = {p.stem for p in BROKEN}
    for wanted in ("wrong-type-duration", "unknown-provider", "steps-not-increasing",
                   "weight-over-100", "negative-duration", "missing-router-field", "unknown-key"):
        assert wanted in names


def test_problems_are_all_reported_at_once(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(MINIMAL.replace("{steps: [10, 50]}", "{steps: [10, 500], colour: red}")
                 .replace("stable: v1", "stable: v1, extra: 1"))
    with pytest.raises(PolicyError) as info:
        load_policy(f)
    paths = {p.path for p in info.value.problems}
    assert {"spec.strategy.steps[1]", "spec.strategy.colour", "spec.target.extra"} <= paths


def test_load_policies_rejects_duplicate_names(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(MINIMAL)
    (tmp_path / "b.yaml").write_text(MINIMAL)
    with pytest.raises(PolicyError, match="unique"):
        load_policies(tmp_path)


def test_missing_file_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="file not found"):
        load_policy(tmp_path / "nope.yaml")
    with pytest.raises(PolicyError, match="directory"):
        load_policy(tmp_path)


def test_json_schema_describes_the_policy() -> None:
    schema = json_schema()
    assert schema["title"] == "Canary Analyzer RolloutPolicy"
    assert "spec" in schema["properties"]
    import jsonschema

    # The reference policies satisfy the published schema too.
    for p in POLICIES:
        jsonschema.validate(read_yaml(p.read_text()), schema)


runner = CliRunner()


def test_validate_cli_ok_on_reference_policies() -> None:
    result = runner.invoke(app, ["validate", *map(str, POLICIES)])
    assert result.exit_code == 0, result.output
    assert result.output.count("ok ") == len(POLICIES)


def test_validate_cli_reports_and_fails(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(MINIMAL.replace("[10, 50]", "[10, 5]"))
    result = runner.invoke(app, ["validate", str(bad), str(POLICIES[0])])
    assert result.exit_code == 1
    assert f"{bad}:7: spec.strategy: weights in steps must increase strictly" in result.output
    assert "Traceback" not in result.output


def test_schema_cli_prints_json() -> None:
    import json

    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    assert json.loads(result.output)["title"] == "Canary Analyzer RolloutPolicy"


def test_yaml_on_off_yes_no_are_strings_not_booleans() -> None:
    text = MINIMAL + (
        "  notifications:\n"
        "    - url: http://hooks.local/x\n"
        "      on: [rollback]\n"
    )
    p = parse_policy(text)
    assert p.spec.notifications[0].on == ["rollback"]
    ab = MINIMAL.replace(
        "{steps: [10, 50]}", "{type: ab, match: {header: {name: x-beta, value: on}}}"
    )
    assert parse_policy(ab).spec.strategy.match.header.value == "on"
    flag = MINIMAL + "  decision: {checkSampleRatio: false}\n"
    assert parse_policy(flag).spec.decision.checkSampleRatio is False
