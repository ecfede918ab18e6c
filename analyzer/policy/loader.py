"""Reading policy files: YAML 1.2 with line numbers and no duplicate keys, and every problem
as `FILE:LINE: FIELD PATH: what is expected`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)

from analyzer.policy.base import model_names
from analyzer.policy.model import Policy

# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a policy file."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path or '(document)'}: {self.message}"


class PolicyError(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (a silent overwrite hides a typo)."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        try:
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, f"unhashable key {key!r}", key_node.start_mark
            ) from None
    return loader.construct_mapping(node, deep=deep)


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

# YAML 1.1 reads `on`, `off`, `yes`, `no` as booleans, which breaks `notifications[].on:` and
# header values like `on`. Policies follow YAML 1.2 here: only true/false are booleans.
_BOOL_TAG = "tag:yaml.org,2002:bool"
_LineLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_LineLoader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def read_yaml(text: str) -> Any:
    """Parse YAML as policies are parsed (YAML 1.2 booleans, duplicate keys refused)."""
    return yaml.load(text, Loader=_LineLoader)  # a SafeLoader subclass


def _line_index(node: yaml.Node | None) -> dict[tuple[Any, ...], int]:
    """Map each field path to its 1-based line in the YAML text."""
    lines: dict[tuple[Any, ...], int] = {}
    # An alias repeats a node object; walking it again would cost the expanded size ("billion
    # laughs"), and its fields already point at the anchor's lines.
    seen: set[int] = set()

    def walk(n: yaml.Node, path: tuple[Any, ...]) -> None:
        lines[path] = n.start_mark.line + 1
        if id(n) in seen:
            return
        seen.add(id(n))
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else str(k.value)
                lines[(*path, key)] = k.start_mark.line + 1
                walk(v, (*path, key))
                lines[(*path, key)] = k.start_mark.line + 1
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                walk(v, (*path, i))

    if node is not None:
        walk(node, ())
    return lines


_TAG_KEYS = ("provider", "source", "type")


def _is_branch_label(part: Any) -> bool:
    """pydantic names union members in `loc`: 'constrained-int', 'PauseStep', 'function-..'."""
    if not isinstance(part, str):
        return False
    return (
        part in model_names()
        or part.startswith(("constrained-", "function-", "lax-", "json-or-python"))
        or "[" in part
        or part in ("int", "float", "str", "bool", "list", "dict")
    )


def _real_path(
    raw: Any, loc: tuple[Any, ...]
) -> tuple[tuple[Any, ...], tuple[str, int] | None]:
    """Drop pydantic's union-branch names from `loc`, keeping the keys present in the YAML.

    Returns the path and the union branch the error came from with the depth at which the
    branch applies (None outside unions)."""
    out: list[Any] = []
    branch: tuple[str, int] | None = None
    node = raw
    for part in loc:
        if isinstance(node, dict) and part in node:
            out.append(part)
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and any(
            node.get(k) == part for k in _TAG_KEYS
        ):
            continue  # discriminated-union branch name, not a key
        elif isinstance(node, list) and isinstance(part, int):
            out.append(part)
            node = node[part] if 0 <= part < len(node) else None
        elif _is_branch_label(part):
            branch = (str(part), len(out))
        else:
            out.append(part)
            node = None
    return tuple(out), branch


def _wrong_branch(raw: Any, path: tuple[Any, ...], branch: tuple[str, int] | None) -> bool:
    """An error from the union member that does not fit the value's shape (a mapping checked
    as an int, or a number checked as a mapping) is noise: the other member's error is the one."""
    if branch is None:
        return False
    label, depth = branch
    node = raw
    for part in path[:depth]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False
    is_model_branch = label in model_names()
    return is_model_branch != isinstance(node, dict)


def format_path(path: tuple[Any, ...]) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _friendly(err: dict[str, Any]) -> str:
    kind, msg = err["type"], err["msg"]
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown field (check the spelling; `canary schema` lists the fields)"
    if kind == "missing":
        return "required field is missing"
    if kind == "union_tag_invalid":
        expected = ctx.get("expected_tags", "")
        what = str(ctx.get("discriminator", "kind")).strip("'")
        return f"unknown {what} {ctx.get('tag')!r}; expected one of {expected}"
    if kind == "string_pattern_mismatch":
        return _PATTERN_HELP.get(ctx.get("pattern", ""), msg) + f", got {err.get('input')!r}"
    if kind == "union_tag_not_found":
        return f"missing {str(ctx.get('discriminator', 'discriminator')).strip(chr(39))} field"
    if kind == "literal_error":
        return f"expected {ctx.get('expected')}, got {err.get('input')!r}"
    if msg.startswith("Value error, "):
        return msg[len("Value error, "):]
    if msg.startswith("Assertion failed, "):
        return msg[len("Assertion failed, "):]
    got = err.get("input")
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return f"{msg[0].lower()}{msg[1:]}, got {got!r}"
    return f"{msg[0].lower()}{msg[1:]}"


_PATTERN_HELP = {
    r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$": "expected a Kubernetes name (lower-case letters, digits, "
    "'-' and '.', starting and ending with a letter or digit)",
    r"^https?://[^\s]+$": "expected an http(s) URL such as http://prometheus:9090",
    r"^[a-zA-Z_][a-zA-Z0-9_]*$": "expected a Prometheus label name (letters, digits, '_')",
}


def parse_policy(text: str, file: str = "<string>") -> Policy:
    """Validate policy YAML text; raise PolicyError naming file, line, field and expectation."""
    try:
        node = yaml.compose(text, Loader=_LineLoader)
        raw = yaml.load(text, Loader=_LineLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        problem = " ".join(x for x in (e.context, e.problem) if x) or "YAML syntax error"
        raise PolicyError([Problem(file, line, "", f"invalid YAML: {problem}")]) from None
    except yaml.YAMLError as e:
        raise PolicyError([Problem(file, None, "", f"invalid YAML: {e}")]) from None
    except RecursionError:
        raise PolicyError([Problem(file, None, "", "invalid YAML: nested too deeply")]) from None
    if raw is None:
        raise PolicyError([Problem(file, 1, "", "the file is empty; expected a RolloutPolicy")])
    if not isinstance(raw, dict):
        raise PolicyError(
            [Problem(file, 1, "", f"expected a mapping (a RolloutPolicy), got a "
                     f"{type(raw).__name__}")]
        )
    return validate_policy(raw, file, _line_index(node))


def validate_policy(raw: dict[str, Any], file: str,
                    lines: dict[tuple[Any, ...], int] | None = None) -> Policy:
    """Validate an already parsed policy (a RolloutPolicy read from the API server: `file`
    names the object); PolicyError with `canary validate`'s words."""
    lines = lines or {}
    try:
        return Policy.model_validate(raw)
    except ValidationError as exc:
        problems = []
        seen: set[tuple[str, str]] = set()
        for err in exc.errors(include_url=False):
            path, branch = _real_path(raw, tuple(err["loc"]))
            if _wrong_branch(raw, path, branch):
                continue
            if err["type"] == "union_tag_invalid":
                path = (*path, str((err.get("ctx") or {}).get("discriminator", "")).strip("'"))
            line = None
            for cut in range(len(path), -1, -1):
                if path[:cut] in lines:
                    line = lines[path[:cut]]
                    break
            p = Problem(file, line, format_path(path), _friendly(err))
            key = (p.path, p.message)
            if key not in seen:
                seen.add(key)
                problems.append(p)
        raise PolicyError(problems) from None


def load_policy(path: str | Path) -> Policy:
    """Read and validate one policy file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError([Problem(str(p), None, "", "file not found")]) from None
    except IsADirectoryError:
        raise PolicyError(
            [Problem(str(p), None, "", "is a directory, expected a YAML file")]
        ) from None
    except UnicodeDecodeError as e:
        raise PolicyError([Problem(str(p), None, "", f"not UTF-8 text: {e.reason}")]) from None
    except OSError as e:
        raise PolicyError([Problem(str(p), None, "", f"cannot read: {e.strerror}")]) from None
    return parse_policy(text, str(p))


def load_policies(directory: str | Path) -> list[Policy]:
    """Every `*.yaml`/`*.yml` policy in a directory; all problems of all files at once."""
    problems: list[Problem] = []
    policies: list[Policy] = []
    for f in sorted([*Path(directory).glob("*.yaml"), *Path(directory).glob("*.yml")]):
        try:
            policies.append(load_policy(f))
        except PolicyError as e:
            problems.extend(e.problems)
    if problems:
        raise PolicyError(problems)
    names = [p.name for p in policies]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise PolicyError([Problem(str(directory), None, "metadata.name",
                                   f"policy names must be unique, repeated: {', '.join(dupes)}")])
    return policies
