"""The RolloutPolicy CustomResourceDefinition, generated from the policy model (`canary crd`).

The pydantic model (model.py and its blocks) is the one definition of a policy; this module turns
its JSON Schema into a *structural* OpenAPI v3 schema the API server accepts:

- every `$ref` inlined (CRDs allow none); `Optional[X]` becomes X with `nullable: true`;
- a discriminated union (router by `provider`, metrics by `source`, checks by `type`) becomes ONE
  object with the properties of every branch; CEL rules (`x-kubernetes-validations`) then say
  which fields each branch needs and which it does not take, so a field of another provider is
  refused as `canary validate` refuses it;
- a strategy step is a weight or `{pause: ...}`, and a union field whose branches give it
  different types (router.stickySessions: an object for Istio, a boolean for NGINX Ingress):
  the only nodes that keep `x-kubernetes-preserve-unknown-fields` (a structural schema gives
  each node one type); CEL cannot see an untyped node, so the controller alone checks them;
- defaults are the model's (durations written as the policy writes them: `30s`, not `PT30S`); a
  block the model defaults as a whole gets `default: {}` so the server fills its fields in;
  a union's field keeps a default only when every branch has it with that value;
- the cross-field rules the model's validators enforce and CEL can state are hand-written below
  (`RULES`), keyed by the model they belong to.

What only the controller checks (it validates every object with the model and reports
`Ready=False, reason InvalidSpec` with `canary validate`'s words): `strategy.steps` (weights
0..100 increasing, pause shape, steps vs stepWeight), `router.stickySessions`, duration
bounds (a duration is a string to OpenAPI: `interval` 1s..1h, `maxStepDuration >=
minStepDuration`, `window <= interval`, ...), `severeRatio` above every check's
1 + tolerance (a tolerance left out takes the model's default), unique check names (defaults
depend on the check type), a preset's fit to the checks, router and version labels
(`metrics_fit_problems`), the Gateway API and Envoy Gateway rules, and non-finite numbers
(JSON has none: kubectl refuses `.inf` before sending).
"""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from typing import Any

from pydantic import TypeAdapter

from analyzer.policy.base import API_VERSION, KIND
from analyzer.policy.model import Spec
from analyzer.policy.status import PolicyStatus
from analyzer.util.times import format_duration

GROUP, VERSION = API_VERSION.split("/")
PLURAL = "rolloutpolicies"
SINGULAR = "rolloutpolicy"
SHORT_NAMES = ["rpol"]
CRD_NAME = f"{PLURAL}.{GROUP}"

_DURATION_PATTERN = r"^(\d+(\.\d+)?(ms|s|m|h|d))+$"
_CEL_RESERVED = {"true", "false", "null", "in", "as", "break", "const", "continue", "else",
                 "for", "function", "if", "import", "let", "loop", "package", "namespace",
                 "return", "var", "void", "while"}
#: Bounds on lists that CEL rules iterate (the API server refuses rules of unbounded cost); the
#: model has the same bounds, so `canary validate` agrees.
_MAX_ITEMS = {"Strategy.steps": 100, "Spec.checks": 32}

#: Model defaults the CRD leaves out: a RolloutPolicy's target namespace is its own (the
#: controller fills it in), not `default`.
_NO_DEFAULT = {"Target.namespace"}

Rule = tuple[str, str]  # (CEL rule, message)

#: Cross-field rules of the model's validators, as CEL, per model (class name).
RULES: dict[str, list[Rule]] = {
    "Target": [
        ("has(self.canaryRef) || (has(self.stable) && has(self.canary))",
         "stable and canary are required (or give canaryRef, whose new versions are the "
         "canaries)"),
        ("!has(self.stable) || !has(self.canary) || self.stable != self.canary",
         "stable and canary must differ"),
    ],
    "CanaryRef": [
        ("(self.kind == 'SeldonDeployment') == has(self.predictor)",
         "predictor is required for a SeldonDeployment canaryRef and applies to it only"),
        ("self.kind == 'Deployment' || (!has(self.container) && self.versionFrom == 'image')",
         "versionFrom and container apply to a Deployment canaryRef only"),
        ("!has(self.apiVersion) || self.apiVersion == {'Deployment': 'apps/v1', "
         "'Service': 'serving.knative.dev/v1', 'SeldonDeployment': "
         "'machinelearning.seldon.io/v1', 'Model': 'mlops.seldon.io/v1alpha1'}[self.kind]",
         "apiVersion does not fit kind: Deployment apps/v1, Service serving.knative.dev/v1, "
         "SeldonDeployment machinelearning.seldon.io/v1, Model mlops.seldon.io/v1alpha1"),
    ],
    # `steps` holds weights and pause objects: an untyped node, which CEL cannot see, so no
    # rule may name it (the controller checks steps).
    "Strategy": [
        ("has(self.stepWeight) == has(self.maxWeight)", "stepWeight and maxWeight go together"),
        ("self.type == 'canary' || !has(self.stepWeight)",
         "stepWeight applies to type canary only"),
        ("(self.type == 'ab') == has(self.match)",
         "an ab strategy needs match.header or match.cookie; match applies to type ab only"),
        ("self.type != 'mirror' || has(self.mirrorPercent)",
         "a mirror strategy needs mirrorPercent (e.g. 100)"),
        ("!has(self.mirrorPercent) || self.type in ['mirror', 'blue-green']",
         "mirrorPercent applies to types mirror and blue-green"),
        ("!has(self.ramp) || self.ramp == 'strict' || self.type == 'canary'",
         "ramp risk-budgeted applies to type canary (weight steps)"),
    ],
    "Match": [("has(self.header) != has(self.cookie)", "give exactly one of header or cookie")],
    "Spec": [
        ("!(self.strategy.type == 'ab' && self.router.provider in "
         "['kubernetes', 'smi', 'seldon'])",
         "this router cannot route by header or cookie (strategy ab)"),
        ("self.strategy.type != 'mirror' || self.router.provider in "
         "['istio', 'seldon', 'dry-run']",
         "this router cannot mirror traffic (strategy mirror): use istio, seldon or dry-run"),
        ("self.metrics.source != 'simulate' || self.router.provider == 'dry-run' || "
         "(has(self.metrics.allowSimulatedMetrics) && self.metrics.allowSimulatedMetrics)",
         "source simulate invents its traffic and this router would move real traffic on it: "
         "use source prometheus, or router provider dry-run, or (tests, demos) "
         "metrics.allowSimulatedMetrics: true"),
        ("self.router.provider != 'istio' || "
         "(has(self.router.stableSubset) && has(self.router.canarySubset) && "
         "!has(self.router.stableHost) && !has(self.router.canaryHost)) || "
         "(has(self.router.stableHost) && has(self.router.canaryHost) && "
         "!has(self.router.stableSubset) && !has(self.router.canarySubset))",
         "istio: give stableSubset and canarySubset (with a destinationRule), or stableHost "
         "and canaryHost"),
        ("self.metrics.source != 'prometheus' || "
         "(has(self.metrics.preset) && self.metrics.preset == 'custom') == "
         "has(self.metrics.queries)",
         "preset custom needs queries (requests and errors); queries are only used with "
         "preset custom"),
        ("!has(self.checks) || self.checks.all(c, c.type != 'threshold' || "
         "c.metric != 'latency' || has(c.quantile))",
         "a latency threshold check needs quantile (e.g. 0.99)"),
        ("!has(self.checks) || self.checks.all(c, c.type != 'classic' || "
         "!has(c.advisory) || c.advisory)",
         "classic tests cannot gate: remove advisory: false (they test 'no difference' at one "
         "look; the error-rate and latency checks gate)"),
    ],
}


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition object (apiextensions.k8s.io/v1)."""
    spec_schema = _structural(Spec.model_json_schema(), "Spec")
    status_schema = _structural(PolicyStatus.model_json_schema(), "PolicyStatus")
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME,
                     "labels": {"app.kubernetes.io/name": "canary-analyzer",
                                "app.kubernetes.io/part-of": "canary-analyzer"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": KIND, "listKind": f"{KIND}List", "plural": PLURAL,
                      "singular": SINGULAR, "shortNames": SHORT_NAMES,
                      "categories": ["canary-analyzer"]},
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": PRINTER_COLUMNS,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "A rollout policy: how the canary of one service is judged "
                                   "and its traffic moved (docs/policy.md). Generated from the "
                                   "policy model by `canary crd`.",
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": spec_schema,
                        "status": status_schema,
                    },
                    "required": ["spec"],
                }},
            }],
        },
    }


PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Weight", "type": "integer", "jsonPath": ".status.weight"},
    {"name": "Step", "type": "string", "jsonPath": ".status.step"},
    {"name": "Canary", "type": "string", "jsonPath": ".status.canary"},
    {"name": "Stable", "type": "string", "jsonPath": ".status.stable", "priority": 1},
    {"name": "Last Decision", "type": "string", "jsonPath": ".status.lastDecision"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def crd_yaml() -> str:
    """The CRD as YAML, as shipped in deploy/ (stable key order: a diff shows a model change)."""
    import yaml

    header = ("# Generated by `canary crd` from the policy model (analyzer/policy/crd.py); do "
              "not edit.\n# tests/deploy keep this file equal to the command's output.\n")
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100, allow_unicode=True)


# --------------------------------------------------------------------------- conversion


def _structural(schema: dict[str, Any], root_name: str) -> dict[str, Any]:
    return _Converter(schema.get("$defs", {})).convert(schema, root_name)


class _Converter:
    def __init__(self, defs: dict[str, Any]) -> None:
        self.defs = defs

    def _deref(self, s: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """The schema a `$ref` names (its siblings win), and the model's name."""
        if "$ref" not in s:
            return s, s.get("title") if s.get("type") == "object" else None
        name = s["$ref"].rsplit("/", 1)[1]
        merged = {**self.defs[name], **{k: v for k, v in s.items() if k != "$ref"}}
        return merged, name

    def convert(self, s: dict[str, Any], model: str | None = None,
                field: str | None = None) -> dict[str, Any]:
        s, name = self._deref(s)
        model = name or model
        branches = s.get("anyOf") or s.get("oneOf")
        if branches:
            out = self._union(s, branches)
        else:
            out = self._plain(s, model)
        if s.get("description") and "description" not in out:
            out["description"] = s["description"]
        if field is not None and field in _MAX_ITEMS and out.get("type") == "array":
            out["maxItems"] = _MAX_ITEMS[field]
        if ("default" in s and s["default"] is not None and "default" not in out
                and field not in _NO_DEFAULT):
            out["default"] = _default(s["default"], s)
        for rule, message in RULES.get(model or "", []) if not branches else []:
            out.setdefault("x-kubernetes-validations", []).append(
                {"rule": rule, "message": message})
        return out

    def _plain(self, s: dict[str, Any], model: str | None) -> dict[str, Any]:
        t = s.get("type")
        out: dict[str, Any] = {}
        if s.get("description"):
            out["description"] = s["description"]
        if t == "object" or "properties" in s:
            out["type"] = "object"
            props = s.get("properties", {})
            if props:
                out["properties"] = {
                    k: self.convert(v, None, f"{model}.{k}") for k, v in props.items()}
            if s.get("required"):
                out["required"] = list(s["required"])
            extra = s.get("additionalProperties")
            if isinstance(extra, dict):
                out["additionalProperties"] = self.convert(extra)
            return out
        if t == "array":
            out["type"] = "array"
            out["items"] = self.convert(s["items"])
            for k in ("minItems", "maxItems"):
                if k in s:
                    out[k] = s[k]
            return out
        if t not in ("string", "integer", "number", "boolean"):
            raise ValueError(f"cannot express schema {json.dumps(s)[:200]} structurally")
        out["type"] = t
        if "const" in s:
            out["enum"] = [s["const"]]
        for k in ("enum", "pattern", "minLength", "maxLength", "minimum", "maximum"):
            if k in s:
                out[k] = s[k]
        # JSON Schema 2020-12 numbers -> OpenAPI 3.0 booleans
        for bound, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            if bound in s:
                out[flag] = s[bound]
                out[bound] = True
        return out

    def _union(self, s: dict[str, Any], branches: list[dict[str, Any]]) -> dict[str, Any]:
        nullable = any(b.get("type") == "null" for b in branches)
        rest = [b for b in branches if b.get("type") != "null"]
        resolved = [self._deref(b) for b in rest]
        if len(rest) == 1:
            out = self.convert(rest[0])
        elif all(r.get("type") == "object" for r, _ in resolved):
            disc = (s.get("discriminator") or {}).get("propertyName")
            if disc is None:
                raise ValueError("a union of objects needs a discriminator")
            out = self._merge_objects(resolved, disc)
        else:
            # A weight or a pause step: two JSON types, which a structural node cannot have;
            # nor can CEL check an untyped node (the controller checks steps).
            out = {"x-kubernetes-preserve-unknown-fields": True}
        if nullable:
            out["nullable"] = True
        return out

    def _merge_objects(self, branches: list[tuple[dict[str, Any], str | None]],
                       disc: str) -> dict[str, Any]:
        values: list[str] = []
        per_branch: list[dict[str, dict[str, Any]]] = []
        required: list[list[str]] = []
        for b, name in branches:
            d = b["properties"][disc]
            values.append(d["const"] if "const" in d else d["enum"][0])
            per_branch.append({k: self.convert(v, None, f"{name}.{k}")
                               for k, v in b["properties"].items() if k != disc})
            required.append([r for r in b.get("required", []) if r != disc])
        names: list[str] = []
        for props in per_branch:
            names.extend(k for k in props if k not in names)
        merged: dict[str, Any] = {disc: {"type": "string", "enum": values}}
        rules: list[dict[str, str]] = []
        for k in names:
            having = [i for i, props in enumerate(per_branch) if k in props]
            merged[k] = _merge_field([per_branch[i][k] for i in having],
                                     everywhere=len(having) == len(per_branch))
            if len(having) < len(per_branch) and "type" in merged[k]:  # CEL sees typed only
                allowed = [values[i] for i in having]
                rules.append({
                    "rule": f"!has(self.{_cel(k)}) || self.{_cel(disc)} in "
                            f"[{', '.join(repr(v) for v in allowed)}]",
                    "message": f"{k} applies to {disc} {', '.join(allowed)} only"})
        for value, req in zip(values, required, strict=True):
            if req:
                rules.append({
                    "rule": f"self.{_cel(disc)} != {value!r} || (" +
                            " && ".join(f"has(self.{_cel(r)})" for r in req) + ")",
                    "message": f"{disc} {value} needs {', '.join(req)}"})
        out: dict[str, Any] = {"type": "object", "properties": merged, "required": [disc]}
        if rules:
            out["x-kubernetes-validations"] = rules
        return out


def _merge_field(schemas: list[dict[str, Any]], *, everywhere: bool) -> dict[str, Any]:
    """One schema for a field several union branches have: what they agree on (the looser
    bounds, the union of enums); the controller checks each branch's own bounds."""
    out = copy.deepcopy(schemas[0])
    if len({json.dumps(x.get("type")) for x in schemas}) > 1:
        # e.g. router.stickySessions: an object for Istio, a boolean for NGINX Ingress. One
        # node cannot have two types: it keeps what it is given, and the controller checks it.
        return {"description": "; ".join(dict.fromkeys(
                    str(x.get("description", "")) for x in schemas if x.get("description"))),
                "x-kubernetes-preserve-unknown-fields": True}
    for other in schemas[1:]:
        if "enum" in out and "enum" in other:
            out["enum"] = out["enum"] + [v for v in other["enum"] if v not in out["enum"]]
        for k in list(out):
            if k in ("type", "enum", "properties", "items"):
                continue
            if out.get(k) != other.get(k):
                del out[k]
    if not everywhere:
        out.pop("default", None)
    return out


def _default(value: Any, s: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        return {}  # the server fills the block's fields from their own defaults
    if isinstance(value, str) and s.get("pattern") == _DURATION_PATTERN:
        return format_duration(TypeAdapter(timedelta).validate_python(value))
    return value


def _cel(name: str) -> str:
    return f"__{name}__" if name in _CEL_RESERVED else name
