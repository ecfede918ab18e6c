"""`canary validate` and `canary replay` under hostile files (hypothesis): whatever the bytes,
the answer is exit 0 or a clear error with exit 1, never a traceback."""

from __future__ import annotations

import json
import random
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from analyzer.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
REPLAY = ROOT / "tests" / "data" / "replay"
REFERENCE = sorted((ROOT / "policies").glob("*.yaml"))
runner = CliRunner()
FUZZ = settings(max_examples=50, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _invoke(args: list[str]) -> tuple[int, str]:
    res = runner.invoke(app, args)
    # An exception other than SystemExit is a crash the user would see as a traceback.
    assert res.exception is None or isinstance(res.exception, SystemExit), (
        args, repr(res.exception))
    out = res.output
    assert "Traceback" not in out, out[-2000:]
    assert res.exit_code in (0, 1), (res.exit_code, out[-2000:])
    if res.exit_code == 1:
        assert "error" in out.lower() or "invalid" in out.lower(), out[-2000:]
    return res.exit_code, out


def _mutate(text: str, rnd: random.Random, n: int) -> str:
    chars = list(text)
    junk = [":", "-", " ", "\n", "{", "}", "[", "]", "\"", "'", "&a", "*a", "!!python/object",
            "\t", "\x00", "1e999", "~", "%", "@", "?", "|", ">", "#"]
    for _ in range(n):
        if not chars:
            break
        i = rnd.randrange(len(chars))
        op = rnd.random()
        if op < 0.4:
            del chars[i: i + rnd.randint(1, 8)]
        elif op < 0.8:
            chars.insert(i, rnd.choice(junk))
        else:
            j = rnd.randrange(len(chars))
            chars[i], chars[j] = chars[j], chars[i]
    return "".join(chars)


@FUZZ
@given(data=st.binary(max_size=400))
def test_validate_random_bytes(tmp_path: Path, data: bytes) -> None:
    f = tmp_path / "p.yaml"
    f.write_bytes(data)
    code, out = _invoke(["validate", str(f)])
    if code == 1:
        assert str(f) in out or "p.yaml" in out, out  # the error names the file


@FUZZ
@given(index=st.integers(0, len(REFERENCE) - 1), seed=st.integers(0, 2**32),
       edits=st.integers(1, 12))
def test_validate_mutated_reference_policies(tmp_path: Path, index: int, seed: int,
                                             edits: int) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(_mutate(REFERENCE[index].read_text(), random.Random(seed), edits))
    _invoke(["validate", str(f)])


def test_validate_yaml_alias_bomb(tmp_path: Path) -> None:
    """A 'billion laughs' document (10^6 leaves once expanded) is refused with a clear error,
    quickly: aliases are walked once, not once per use."""
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for k in range(1, 6):
        lines.append(f"a{k}: &a{k} [" + ", ".join([f"*a{k - 1}"] * 10) + "]")
    lines.append("spec: {strategy: {canary: {steps: *a5}}}")
    f = tmp_path / "bomb.yaml"
    f.write_text("\n".join(lines) + "\n")
    code, out = _invoke(["validate", str(f)])
    assert code == 1
    assert "bomb.yaml" in out


GOOD = [line for line in (REPLAY / "healthy.jsonl").read_text().splitlines() if line][:6]
values = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
                   st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10),
                   st.lists(st.integers(-5, 10**6), max_size=8))


@st.composite
def replay_files(draw: st.DrawFn) -> str:
    lines = []
    for raw in GOOD:
        doc = json.loads(raw)
        kind = draw(st.sampled_from(["keep", "field", "drop", "junk", "nested"]))
        if kind == "field":
            doc[draw(st.sampled_from(["t", "canary_weight", "stable", "canary", "extra"]))] = (
                draw(values))
        elif kind == "drop":
            doc.pop(draw(st.sampled_from(sorted(doc))), None)
        elif kind == "nested":
            version = draw(st.sampled_from(["stable", "canary"]))
            if isinstance(doc.get(version), dict):
                key = draw(st.sampled_from(["requests", "errors", "latency"]))
                doc[version][key] = draw(st.one_of(values, st.fixed_dictionaries(
                    {"le": st.lists(values, max_size=4), "counts": st.lists(values, max_size=4)})))
        if kind == "junk":
            lines.append(draw(st.text(max_size=40)).replace("\n", " "))
        else:
            lines.append(json.dumps(doc))
    return "\n".join(lines) + "\n"


@FUZZ
@given(content=replay_files())
def test_replay_hostile_jsonl(tmp_path: Path, content: str) -> None:
    f = tmp_path / "data.jsonl"
    f.write_text(content, encoding="utf-8", errors="surrogateescape")
    _invoke(["replay", str(REPLAY / "policy.yaml"), str(f)])


@FUZZ
@given(data=st.binary(max_size=300))
def test_replay_random_bytes(tmp_path: Path, data: bytes) -> None:
    f = tmp_path / "data.jsonl"
    f.write_bytes(data)
    _invoke(["replay", str(REPLAY / "policy.yaml"), str(f), "--json"])
