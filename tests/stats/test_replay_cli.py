"""`canary replay` over the example files in tests/data/replay/."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from analyzer.cli.app import app

DATA = Path(__file__).parents[1] / "data" / "replay"
POLICY = str(DATA / "policy.yaml")
runner = CliRunner()


def _json_lines(*files: str) -> list[dict]:
    res = runner.invoke(app, ["replay", POLICY, *files, "--json"])
    assert res.exit_code == 0, res.output
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


def test_json_output_per_tick_and_final_per_file() -> None:
    out = _json_lines(str(DATA / "healthy.jsonl"), str(DATA / "error-regression.jsonl"))
    finals = [o for o in out if o.get("final")]
    assert [f["outcome"] for f in finals] == ["promoted", "rolled_back"]
    ticks = [o for o in out if not o.get("final")]
    for t in ticks:
        assert {"file", "t", "decision", "step", "checks"} <= set(t)
        for c in t["checks"]:
            assert {"name", "outcome", "estimate", "ci", "evidence"} <= set(c)
    healthy = [t for t in ticks if t["file"].endswith("healthy.jsonl")]
    assert healthy[-1]["decision"] == "promote" and finals[0]["ticks"] == healthy[-1]["tick"]
    assert max(t["step"] for t in healthy) >= 2  # a promote advanced the policy's step
    regression = [t for t in ticks if t["file"].endswith("error-regression.jsonl")]
    assert regression[-1]["decision"] == "rollback" and finals[1]["ticks"] == len(regression)


def test_latency_regression_rolls_back() -> None:
    out = _json_lines(str(DATA / "latency-regression.jsonl"))
    assert out[-1]["outcome"] == "rolled_back"
    assert "latency" in out[-1]["reason"]


def test_table_by_default() -> None:
    res = runner.invoke(app, ["replay", POLICY, str(DATA / "error-regression.jsonl")])
    assert res.exit_code == 0
    assert "rollback" in res.stdout and "outcome: rolled_back" in res.stdout


def test_bad_line_names_file_and_line(tmp_path: Path) -> None:
    good = (DATA / "error-regression.jsonl").read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    broken = json.loads(good[1])
    broken["canary"]["errors"] = broken["canary"]["requests"] + 1
    bad.write_text("\n".join([good[0], json.dumps(broken), "{not json"]) + "\n")
    res = runner.invoke(app, ["replay", POLICY, str(bad)])
    assert res.exit_code == 1
    assert f"{bad}:2" in res.stderr and "exceeds canary.requests" in res.stderr
    assert "Traceback" not in res.output
    bad.write_text(good[0] + "\n{not json\n")
    res = runner.invoke(app, ["replay", POLICY, str(bad)])
    assert res.exit_code == 1 and f"{bad}:2: invalid JSON" in res.stderr


def test_missing_files_are_clear_errors(tmp_path: Path) -> None:
    res = runner.invoke(app, ["replay", POLICY, str(tmp_path / "nope.jsonl")])
    assert res.exit_code == 1 and "file not found" in res.stderr
    res = runner.invoke(app, ["replay", str(tmp_path / "nope.yaml"), str(DATA / "healthy.jsonl")])
    assert res.exit_code == 1 and "file not found" in res.stderr


def _healthy_lines() -> list[dict]:
    return [json.loads(line) for line in (DATA / "healthy.jsonl").read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def _replay(tmp_path: Path, lines: list[dict]) -> object:
    f = tmp_path / "data.jsonl"
    f.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return runner.invoke(app, ["replay", POLICY, str(f)]), f


def test_overlapping_intervals_are_refused_naming_the_line(tmp_path: Path) -> None:
    lines = _healthy_lines()[:3]
    lines[1]["t0"] = lines[0]["t0"] if "t0" in lines[0] else lines[0]["t"]
    lines[2]["t0"] = lines[0]["t"]  # starts before line 2 ended: counts its requests again
    res, f = _replay(tmp_path, lines)
    assert res.exit_code == 1
    assert f"{f}:3" in res.stderr and "must not overlap" in res.stderr


def test_repeated_intervals_at_tiny_offsets_are_refused(tmp_path: Path) -> None:
    """The same healthy intervals again, 1 ms apart, would count the same traffic as new
    evidence: refused, naming the first such line."""
    from datetime import timedelta

    from analyzer.util.times import iso, parse_timestamp

    lines = _healthy_lines()[:6]
    last = parse_timestamp(lines[-1]["t"])
    again = []
    for k, x in enumerate(lines * 4, start=1):
        y = {key: v for key, v in x.items() if key != "t0"}
        y["t"] = iso(last + timedelta(milliseconds=k))
        again.append(y)
    res, f = _replay(tmp_path, lines + again)
    assert res.exit_code == 1
    assert f"{f}:7" in res.stderr and "shorter than 1s" in res.stderr


def test_non_finite_histogram_bound_is_refused(tmp_path: Path) -> None:
    lines = _healthy_lines()[:2]
    lat = lines[1]["stable"].get("latency")
    assert lat is not None, "the example data carries latency histograms"
    lat["le"][0] = "NaN"
    res, f = _replay(tmp_path, lines)
    assert res.exit_code == 1
    assert f"{f}:2" in res.stderr and "finite" in res.stderr


def _baseline_lines(first_t0: str, n: int = 10) -> list[str]:
    """n stable-only intervals of 30 s ending at `first_t0` (the healthy example's start)."""
    from datetime import timedelta

    from analyzer.util.times import iso, parse_timestamp

    end = parse_timestamp(first_t0, "t0")
    out = []
    for k in range(n, 0, -1):
        t0, t1 = end - k * timedelta(seconds=30), end - (k - 1) * timedelta(seconds=30)
        out.append(json.dumps({"baseline": True, "t0": iso(t0), "t": iso(t1),
                               "stable": {"requests": 12000 + 97 * k, "errors": 12 + k % 3}}))
    return out


def test_baseline_lines_come_first_and_feed_the_judge(tmp_path: Path) -> None:
    """Baseline lines (the stable's traffic before the rollout, as `canary export` writes them)
    are not ticks: the ticks are the analysed lines, numbered from 1, and the baseline's
    intervals reach the judge (its burst estimate)."""
    from analyzer.offline.replay import replay_rollout
    from analyzer.policy import load_policy
    from analyzer.sources.replay import read_replay

    lines = (DATA / "healthy.jsonl").read_text().splitlines()
    first = read_replay(DATA / "healthy.jsonl")[0].samples
    with_base = tmp_path / "with-baseline.jsonl"
    with_base.write_text("\n".join(_baseline_lines(first.t0.isoformat()) + lines) + "\n")
    plain = _json_lines(str(DATA / "healthy.jsonl"))
    based = _json_lines(str(with_base))
    assert plain[-1]["outcome"] == based[-1]["outcome"] == "promoted"
    assert based[0]["line"] == 11 and based[0]["tick"] == 1  # after ten baseline lines
    parsed = read_replay(with_base)
    assert [ln.baseline for ln in parsed[:11]] == [True] * 10 + [False]
    res = replay_rollout(load_policy(POLICY), parsed, "x")
    assert len(res.ticks) == len(based) - 1


def test_misplaced_or_wrong_baseline_lines_are_clear_errors(tmp_path: Path) -> None:
    lines = (DATA / "healthy.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    base = _baseline_lines(first.get("t0") or "2026-03-01T10:00:00Z", 2)
    from datetime import timedelta

    from analyzer.util.times import iso, parse_timestamp

    end = parse_timestamp(first["t"], "t") + timedelta(seconds=30)
    after = _baseline_lines(iso(end), 1)[0]  # the 30 s right after the first analysed line
    late = tmp_path / "late.jsonl"
    late.write_text("\n".join([lines[0], after]) + "\n")
    res = runner.invoke(app, ["replay", POLICY, str(late)])
    assert res.exit_code == 1 and f"{late}:2" in res.stderr
    assert "must come before the first analysed interval" in res.stderr
    with_canary = tmp_path / "canary.jsonl"
    obj = json.loads(base[0])
    obj["canary"] = {"requests": 10, "errors": 0}
    with_canary.write_text(json.dumps(obj) + "\n" + lines[0] + "\n")
    res = runner.invoke(app, ["replay", POLICY, str(with_canary)])
    assert res.exit_code == 1 and f"{with_canary}:1" in res.stderr
    assert "no canary, canary_weight or tick" in res.stderr
    only = tmp_path / "only.jsonl"
    only.write_text("\n".join(base) + "\n")
    res = runner.invoke(app, ["replay", POLICY, str(only)])
    assert res.exit_code == 1 and "only baseline lines" in res.stderr
