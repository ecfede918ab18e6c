"""Property tests: random YAML and mutated policies never produce a traceback."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzer.policy import PolicyError, parse_policy

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "policies").glob("*.yaml"))]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["30s", "-1m", "5x", "istio", "dry-run", "canary", "+Inf", "100", "1e400"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def _check(text: str) -> None:
    try:
        parse_policy(text, "fuzz.yaml")
    except PolicyError as e:
        assert e.problems
        for p in e.problems:
            assert p.file == "fuzz.yaml"
            assert p.message and "Traceback" not in p.message


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_random_text_never_raises_anything_but_policy_error(text: str) -> None:
    _check(text)


@settings(max_examples=150, deadline=None)
@given(values)
def test_random_documents(doc: Any) -> None:
    _check(yaml.safe_dump(doc))


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    doc = copy.deepcopy(draw(st.sampled_from(REFERENCE)))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        path = draw(st.sampled_from(paths))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(values)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=10))] = draw(values)
        if not isinstance(doc, dict):
            break
    return doc


@settings(max_examples=300, deadline=None)
@given(mutated())
def test_mutated_reference_policies(doc: Any) -> None:
    _check(yaml.safe_dump(doc))
