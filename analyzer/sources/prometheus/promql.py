"""PromQL text from user values: every value escaped, every label name validated, custom
templates filled. Nothing a policy says can change a query's structure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from analyzer.sources.prometheus.presets import LABEL_NAME, Matcher


class PrometheusConfigError(ValueError):
    """The source's configuration cannot produce a safe query (bad label name, bad template)."""


def promql_string(value: str) -> str:
    """Escape `value` for the inside of a double-quoted PromQL string literal.

    PromQL strings follow Go's escapes: backslash, double quote and control characters are
    escaped, so no value can close the string or the selector (`v1"} or vector(1) #`).
    """
    out: list[str] = []
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


_RE2_SPECIAL = set("\\.+*?()|[]{}^$")


def _re2_literal(value: str) -> str:
    # Only RE2 metacharacters are escaped: RE2 rejects escapes of letters, digits and spaces.
    return "".join("\\" + ch if ch in _RE2_SPECIAL else ch for ch in value)


def re2_alternation(values: Iterable[str]) -> str:
    """A raw RE2 alternation matching exactly `values` (PromQL anchors it)."""
    return "|".join(_re2_literal(v) for v in sorted(set(values)))


def promql_regex(values: Iterable[str]) -> str:
    """An anchored RE2 alternation matching exactly `values`, escaped for a PromQL string."""
    return promql_string(re2_alternation(values))


def render_matcher(m: Matcher) -> str:
    """`label op "value"` with the value escaped (a raw regex keeps its meaning)."""
    return f'{m.label}{m.op}"{promql_string(m.value)}"'


def render_selector(metrics: Iterable[str], matchers: Iterable[Matcher]) -> str:
    """`name{...}`, or `{__name__=~"a|b", ...}` for a counter with several names."""
    names = list(metrics)
    parts = [render_matcher(m) for m in matchers]
    if len(names) == 1:
        return f"{names[0]}{{{', '.join(parts)}}}" if parts else names[0]
    name = render_matcher(Matcher("__name__", "=~", "|".join(names)))
    return "{" + ", ".join([name, *parts]) + "}"


def check_label(name: str, what: str) -> str:
    if not LABEL_NAME.match(name):
        raise PrometheusConfigError(
            f"{what}: {name!r} is not a valid Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)"
        )
    return name


_PLACEHOLDER = re.compile(
    r"\{(namespace|service|stable|canary|version_label|versions|extra_matchers)\}"
)


def render_template(template: str, values: Mapping[str, str]) -> str:
    """Fill the documented `{placeholder}`s of a custom template; other braces stay PromQL."""
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)
