"""Static scan (ast) of what the routers ask the Kubernetes API to do, as RBAC rules.

The routers do not call the `kubernetes` client themselves: they build `ObjectRef`s (apiVersion,
kind, plural) and call `self.objects.read / update / create` on
`analyzer.routers.kube.objects.KubeObjects`, which dispatches to the client. So the scan has two
levels:

1. kube/objects.py: every `kubernetes` client method called (e.g.
   `patch_namespaced_custom_object`) is mapped to its RBAC verb, group and resource from the
   client's own generated request (`_<method>_serialize`: HTTP method + resource path; GET on a
   named object = get, GET on a collection = list, POST = create, PUT = update, PATCH = patch,
   DELETE = delete). Those calls sit in `KubeObjects._call` under internal verb names
   (`"get": lambda: api.read_...`); the scan checks each name equals the RBAC verb of its client
   call, then follows each public `KubeObjects` method to the `_call(ref, "verb")` verbs it
   reaches (update = read + patch).
2. Each router module: every `self.objects.<method>(<ref>)` call, in the module and in the
   kube/objects.py base classes its router classes inherit, with `<ref>` resolved to the
   `ObjectRef(...)` assigned to that attribute (a ref passed as a parameter counts as any ref the
   module builds: an over-approximation, which only makes the check more permissive for that
   call).

The result is the set of (apiGroup, resource, verb) the module can cause.
"""

from __future__ import annotations

import ast
import functools
import inspect
import re
from dataclasses import dataclass
from pathlib import Path

ROUTERS = Path(__file__).resolve().parents[2] / "analyzer" / "routers" / "kube"
Rule = tuple[str, str, str]  # (apiGroup, resource, verb)

_HTTP_VERB = {"POST": "create", "PUT": "update", "PATCH": "patch"}


class ScanError(Exception):
    """The code does something the scan cannot resolve; teach the scan (or simplify the code)."""


@dataclass(frozen=True)
class ClientCall:
    method: str
    group: str  # "{group}" for CustomObjectsApi (taken from the call's arguments)
    resource: str  # "{plural}" likewise; "deployments/scale" for subresources
    verb: str


@functools.cache
def client_call(method: str) -> ClientCall | None:
    """The RBAC meaning of a `kubernetes.client` API method, or None if it is not one."""
    from kubernetes import client

    for cls_name in dir(client):
        if not cls_name.endswith("Api"):
            continue
        ser = getattr(getattr(client, cls_name), f"_{method}_serialize", None)
        if ser is None:
            continue
        src = inspect.getsource(ser)
        http = re.search(r"method='([A-Z]+)'", src)
        path = re.search(r"resource_path='([^']+)'", src)
        if not http or not path:
            raise ScanError(f"cannot read the request of kubernetes.client.{cls_name}.{method}")
        parts = path.group(1).strip("/").split("/")
        # /api/v1/... (core) or /apis/<group>/<version>/...
        group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
        if rest[:1] == ["namespaces"] and len(rest) > 2:
            rest = rest[2:]
        named = len(rest) >= 2 and rest[1] == "{name}"
        resource = rest[0] + (f"/{rest[2]}" if named and len(rest) > 2 else "")
        if http.group(1) == "GET":
            verb = "get" if named else "list"
        elif http.group(1) == "DELETE":
            verb = "delete" if named else "deletecollection"
        else:
            verb = _HTTP_VERB[http.group(1)]
        return ClientCall(method, group, resource, verb)
    return None


def _attr_chain(node: ast.AST) -> list[str]:
    out: list[str] = []
    while isinstance(node, ast.Attribute):
        out.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        out.append(node.id)
    return out[::-1]


@dataclass(frozen=True)
class KubeScan:
    client_calls: tuple[ClientCall, ...]
    method_verbs: dict[str, frozenset[str]]  # KubeObjects public method -> RBAC verbs
    base_calls: dict[str, tuple[tuple[str, str], ...]]  # class -> ((objects method, ref attr))


def scan_kube(path: Path = ROUTERS / "objects.py") -> KubeScan:
    tree = ast.parse(path.read_text())
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    ko = classes.get("KubeObjects")
    if ko is None:
        raise ScanError(f"{path}: no class KubeObjects")
    calls: list[ClientCall] = []
    # Level 1a: client calls, and the internal verb name each sits under.
    for node in ast.walk(ko):
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values, strict=True):
                for sub in ast.walk(v):
                    if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute):
                        cc = client_call(sub.func.attr)
                        if cc is None:
                            continue
                        calls.append(cc)
                        if not (isinstance(k, ast.Constant) and k.value == cc.verb):
                            key = ast.unparse(k) if k is not None else "**"
                            raise ScanError(
                                f"{path}: {cc.method} (RBAC verb {cc.verb}) is dispatched "
                                f"under {key}; internal verb names must equal RBAC verbs")
    for node in ast.walk(ko):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and client_call(node.func.attr) is not None
                and client_call(node.func.attr) not in calls):
            raise ScanError(f"{path}: client call {node.func.attr} outside the _call dispatch")
    # Level 1b: public KubeObjects methods -> _call verbs, following self.<method>() calls.
    direct: dict[str, set[str]] = {}
    callees: dict[str, set[str]] = {}
    for fn in ko.body:
        if not isinstance(fn, ast.FunctionDef):
            continue
        direct[fn.name], callees[fn.name] = set(), set()
        for node in ast.walk(fn):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            chain = _attr_chain(node.func)
            if chain[:1] == ["self"] and len(chain) == 2:
                if chain[1] == "_call":
                    verb = node.args[1] if len(node.args) > 1 else None
                    if not (isinstance(verb, ast.Constant) and isinstance(verb.value, str)):
                        raise ScanError(f"{path}: {fn.name}: _call verb is not a literal")
                    direct[fn.name].add(verb.value)
                else:
                    callees[fn.name].add(chain[1])

    def reach(name: str, seen: frozenset[str] = frozenset()) -> set[str]:
        out = set(direct.get(name, ()))
        for c in callees.get(name, ()):
            if c not in seen:
                out |= reach(c, seen | {name})
        return out

    method_verbs = {n: frozenset(reach(n)) for n in direct if not n.startswith("_")}
    base_calls = {name: tuple(_objects_calls(cls)) for name, cls in classes.items()
                  if name != "KubeObjects"}
    return KubeScan(tuple(calls), method_verbs, base_calls)


def _objects_calls(cls: ast.ClassDef) -> list[tuple[str, str]]:
    """(KubeObjects method, first argument) for every `self.objects.<m>(arg)` in a class;
    the argument is `self.<attr>` -> "attr", anything else -> "*"."""
    out: list[tuple[str, str]] = []
    for node in ast.walk(cls):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            chain = _attr_chain(node.func)
            if chain[:2] == ["self", "objects"] and len(chain) == 3:
                arg = _attr_chain(node.args[0]) if node.args else []
                out.append((chain[2], arg[1] if arg[:1] == ["self"] and len(arg) == 2 else "*"))
    return out


def _str_value(node: ast.AST, consts: dict[str, str], where: str) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name) and node.id in consts:
        return consts[node.id]
    raise ScanError(f"{where}: ObjectRef argument {ast.unparse(node)} is not a string constant")


def scan_router(path: Path, kube: KubeScan | None = None) -> set[Rule]:
    """(apiGroup, resource, verb) the router module at `path` can cause."""
    kube = kube or scan_kube()
    tree = ast.parse(path.read_text())
    consts = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
              for t in n.targets if isinstance(t, ast.Name)
              and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)}

    def ref_of(call: ast.Call) -> tuple[str, str]:
        args = call.args
        if len(args) < 3:
            raise ScanError(f"{path}:{call.lineno}: ObjectRef needs apiVersion, kind, plural")
        api_version = _str_value(args[0], consts, f"{path}:{call.lineno}")
        plural = _str_value(args[2], consts, f"{path}:{call.lineno}")
        return api_version.rpartition("/")[0], plural

    all_refs: set[tuple[str, str]] = set()
    attr_refs: dict[str, set[tuple[str, str]]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _attr_chain(node.func)[-1:] == ["ObjectRef"]:
            all_refs.add(ref_of(node))
        if isinstance(node, ast.Assign):
            for t in node.targets:
                chain = _attr_chain(t)
                if chain[:1] == ["self"] and len(chain) == 2:
                    refs = {ref_of(c) for c in ast.walk(node.value) if isinstance(c, ast.Call)
                            and _attr_chain(c.func)[-1:] == ["ObjectRef"]}
                    if refs:
                        attr_refs.setdefault(chain[1], set()).update(refs)

    calls: list[tuple[str, str]] = []
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        calls += _objects_calls(cls)
        todo = [b.id for b in cls.bases if isinstance(b, ast.Name)]
        seen: set[str] = set()
        while todo:  # inherited kube/objects.py scaffolding (e.g. SingleObjectRouter uses self.ref)
            b = todo.pop()
            if b in seen or b not in kube.base_calls:
                continue
            seen.add(b)
            calls += kube.base_calls[b]

    rules: set[Rule] = set()
    for method, arg in calls:
        if method not in kube.method_verbs:
            raise ScanError(f"{path}: self.objects.{method} is not a KubeObjects method")
        refs = attr_refs.get(arg, all_refs) if arg != "*" else all_refs
        if not refs:
            raise ScanError(f"{path}: self.objects.{method}({arg}) but no ObjectRef found")
        rules |= {(g, p, v) for g, p in refs for v in kube.method_verbs[method]}
    return rules


def rules_of_clusterrole(role: dict) -> set[Rule]:
    out: set[Rule] = set()
    for r in role.get("rules", []):
        for g in r.get("apiGroups", []):
            for res in r.get("resources", []):
                for v in r.get("verbs", []):
                    out.add((g, res, v))
    return out


def rules_of_permissions(perms: tuple) -> set[Rule]:
    return {(g, res, v) for g, res, verbs in perms for v in verbs}


def event_calls(package: Path = ROUTERS.parents[1]) -> set[Rule]:
    """Event creations anywhere in the analyzer package (client calls on events resources)."""
    out: set[Rule] = set()
    for f in package.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                cc = client_call(node.func.attr) if "event" in node.func.attr else None
                if cc is not None:
                    out.add((cc.group, cc.resource, cc.verb))
    return out
