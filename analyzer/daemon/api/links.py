"""Links out of the dashboard: URL templates (Grafana, Kiali, logs...) filled in per rollout.

`canary run --link 'Grafana=https://grafana.example/d/canary?var-rollout={name}'` (repeatable)
gives every rollout's page a link per template. Placeholders: {name}, {namespace}, {service},
{stable}, {canary}, {generation}, {id}; each value is URL-encoded. Only http and https
templates are accepted, and an unknown placeholder is an error at start-up, not a broken link.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

PLACEHOLDERS = ("name", "namespace", "service", "stable", "canary", "generation", "id")


class LinkError(ValueError):
    """A `--link` value that cannot be used (the message says which part and why)."""


@dataclass(frozen=True)
class LinkTemplate:
    label: str
    template: str

    @classmethod
    def parse(cls, spec: str) -> LinkTemplate:
        """`LABEL=URL-TEMPLATE`, e.g. `Kiali=https://kiali/console/namespaces/{namespace}`."""
        label, sep, template = spec.partition("=")
        label, template = label.strip(), template.strip()
        if not sep or not label or not template:
            raise LinkError(f"{spec!r}: expected LABEL=URL, e.g. "
                            "Grafana=https://grafana.example/d/canary?var-rollout={name}")
        if not template.startswith(("http://", "https://")):
            raise LinkError(f"{label}: the URL must start with http:// or https://")
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
        except ValueError as e:
            raise LinkError(f"{label}: {e} (write a literal brace as {{{{ or }}}})") from None
        unknown = sorted({f for f in fields if f not in PLACEHOLDERS})
        if unknown:
            raise LinkError(f"{label}: unknown placeholder {{{unknown[0]}}}; known: "
                            + ", ".join("{" + p + "}" for p in PLACEHOLDERS))
        return cls(label, template)

    def render(self, values: dict[str, Any]) -> str:
        return self.template.format(**{k: quote(str(values.get(k, "")), safe="")
                                       for k in PLACEHOLDERS})


def render_links(templates: tuple[LinkTemplate, ...],
                 values: dict[str, Any]) -> list[dict[str, str]]:
    return [{"label": t.label, "url": t.render(values)} for t in templates]


__all__ = ["PLACEHOLDERS", "LinkError", "LinkTemplate", "render_links"]
