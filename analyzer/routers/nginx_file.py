"""Local nginx router (no Kubernetes): a weighted `upstream` include file, `nginx -t`, reload.

Owns one file (spec.router.upstreamFile), included in nginx's `http` block. For upstream name
`shop` it defines:

    upstream shop        { server STABLE weight=100-w; server CANARY weight=w; }
    upstream shop_stable { server STABLE; }
    upstream shop_canary { server CANARY; }
    map ... $shop_route  { default shop; <header or cookie value> shop_canary; }

`proxy_pass http://shop;` splits by weight; `proxy_pass http://$shop_route;` also honours the
A/B header or cookie route. A weight of 0 (or 100) marks the other server `down` (nginx weights
are at least 1). Every change writes the file atomically, runs `nginx -t`, and only then
`nginx -s reload`; when either fails, the previous file is put back and RouterError carries
nginx's message. Writing the same content again is a no-op (no reload). No mirroring.

Fencing (analyzer/routers/fence.py): every change happens under the lock `<file>.fence.lock`;
with a fence set (the engine sets one per tick), the token in `<file>.fence` is compared first
(a later owner's token refuses the write), the lease is checked, and the new token is written
before the rename; the upstream file names the token in a `# fence:` comment.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from analyzer.policy import NginxLocalRouter as NginxLocalConfig
from analyzer.policy import Policy
from analyzer.routers import fence as fencing
from analyzer.routers.arguments import KEEP, check_match, check_mirror, check_weight
from analyzer.routers.base import RouterError, TrafficSplit

PERMISSIONS: tuple[tuple[str, str, tuple[str, ...]], ...] = ()  # no Kubernetes API at all
NGINX_TIMEOUT = 30.0


def render_upstream(
    name: str, stable: str, canary: str, weight: int, match: dict[str, str] | None = None,
    token: fencing.FenceToken | None = None,
) -> str:
    """The include file for `weight` percent to the canary (and an optional A/B match); with
    `token`, a comment naming the fencing token that wrote it."""
    weight = check_weight(weight)
    match = check_match(match)
    if match is not None and "pattern" in match:
        raise RouterError("the nginx router matches exact header values only; give a value, "
                          "not a regex")
    if weight == 0:
        servers = [f"server {stable} weight=100;", f"server {canary} down;"]
    elif weight == 100:
        servers = [f"server {stable} down;", f"server {canary} weight=100;"]
    else:
        servers = [f"server {stable} weight={100 - weight};", f"server {canary} weight={weight};"]
    if match is None:
        source, entry = "$uri", ""
    elif "cookie" in match:
        source, entry = f"$cookie_{_var(match['cookie'])}", f'    "always" {name}_canary;\n'
    else:
        source = f"$http_{_var(match['header'])}"
        entry = f'    "{_quote(match["value"])}" {name}_canary;\n'
    lines = "\n".join(f"    {s}" for s in servers)
    return (
        "# Managed by canary-analyzer: the next traffic change rewrites this file.\n"
        f"# canary-weight: {weight}\n"
        + (f"# fence: {token.encode()}\n" if token is not None else "")
        + f"upstream {name} {{\n{lines}\n}}\n"
        f"upstream {name}_stable {{\n    server {stable};\n}}\n"
        f"upstream {name}_canary {{\n    server {canary};\n}}\n"
        f"map {source} ${name}_route {{\n    default {name};\n{entry}}}\n"
    )


def _var(header: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]+", header):
        raise RouterError(f"header or cookie name {header!r}: only letters, digits, '-' and '_'")
    return header.lower().replace("-", "_")


def _quote(value: str) -> str:
    if re.search(r'["\\\s;{}$]', value):
        raise RouterError(f"header value {value!r}: no quotes, spaces, ';', '{{', '}}' or '$'")
    return value


def parse_upstream(text: str, name: str, stable: str, canary: str) -> TrafficSplit:
    """Read back what `render_upstream` wrote (the weights actually in the file)."""
    block = re.search(rf"upstream\s+{re.escape(name)}\s*\{{(.*?)\}}", text, re.S)
    if block is None:
        raise RouterError(f"no `upstream {name}` block in the upstream file")
    weights: dict[str, int] = {}
    for server, opts in re.findall(r"server\s+(\S+?)((?:\s+[^;\s]+)*)\s*;", block.group(1)):
        if "down" in opts.split():
            weights[server] = 0
        else:
            w = re.search(r"weight=(\d+)", opts)
            weights[server] = int(w.group(1)) if w else 1
    total = sum(weights.values())
    weight = round(100 * weights.get(canary, 0) / total) if total else 0
    header = None
    m = re.search(rf"map\s+\$(http|cookie)_(\S+)\s+\${re.escape(name)}_route\s*\{{(.*?)\}}",
                  text, re.S)
    if m:
        value = re.search(r'"([^"]*)"\s+\S+_canary;', m.group(3))
        if m.group(1) == "cookie":
            header = {"cookie": m.group(2)}
        elif value:
            header = {"header": m.group(2).replace("_", "-"), "value": value.group(1)}
    return TrafficSplit(canary_weight=weight, header_route=header)


class NginxLocalRouter:
    provider = "nginx"

    def __init__(self, policy: Policy, *, dry_run: bool = False) -> None:
        cfg = policy.spec.router
        assert isinstance(cfg, NginxLocalConfig)
        self.cfg = cfg
        self.path = Path(cfg.upstreamFile)
        self.dry_run = dry_run
        self._last: list[dict[str, Any]] = []
        self.fence: fencing.Fence | None = None  # set by the engine for each tick

    @property
    def last_applied(self) -> list[dict[str, Any]]:
        return list(self._last)

    # ------------------------------------------------------------------ reading

    def _read(self) -> str | None:
        try:
            return self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as e:
            raise RouterError(f"cannot read upstream file {self.path}: {e.strerror}") from None

    def get_weight(self) -> TrafficSplit:
        text = self._read()
        if text is None:
            raise RouterError(f"upstream file {self.path} does not exist yet; run "
                              "`canary route POLICY --reset` to write it")
        try:
            return parse_upstream(text, self.cfg.upstreamName, self.cfg.stableServer,
                                  self.cfg.canaryServer)
        except RouterError as e:
            raise RouterError(f"upstream file {self.path}: {e}") from None

    # ------------------------------------------------------------------ writing

    def _nginx(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [self.cfg.nginxBinary]
        if self.cfg.nginxConfig:
            cmd += ["-c", self.cfg.nginxConfig]
        cmd += ["-e", "stderr", *args]  # -e: never touch the distribution's default error log
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=NGINX_TIMEOUT,
                                  check=False)
        except FileNotFoundError:
            raise RouterError(f"nginx binary {self.cfg.nginxBinary!r} not found; set "
                              "spec.router.nginxBinary") from None
        except subprocess.TimeoutExpired:
            raise RouterError(f"`{' '.join(cmd)}` did not finish in {NGINX_TIMEOUT:g}s") from None

    def _write(self, text: str | None) -> None:
        if text is None:
            self.path.unlink(missing_ok=True)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)  # atomic: nginx never reads half a file
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _change(self, weight: Any = KEEP, match: Any = KEEP) -> None:
        self._last = []
        if self.dry_run:
            self._change_locked(weight, match, None)
            return
        with fencing.locked(self.path) as token_file:
            self._change_locked(weight, match, token_file)

    def _change_locked(self, weight: Any, match: Any,
                       token_file: fencing.TokenFile | None) -> None:
        old = self._read()
        current = (parse_upstream(old, self.cfg.upstreamName, self.cfg.stableServer,
                                  self.cfg.canaryServer) if old is not None else None)
        w = weight if weight is not KEEP else (current.canary_weight if current else 0)
        m = match if match is not KEEP else (current.header_route if current else None)
        fence = self.fence
        if fence is not None and token_file is not None:
            fence.stamp(str(self.path), token_file.held)
        new = render_upstream(self.cfg.upstreamName, self.cfg.stableServer,
                              self.cfg.canaryServer, w, m,
                              fence.token if fence is not None else None)
        record = {"kind": "NginxUpstreamFile", "path": str(self.path), "content": new}
        if new == old:
            return
        if self.dry_run or token_file is None:
            self._last = [record]
            return
        if fence is not None:
            fence.check_lease(str(self.path))
            token_file.write(fence.token)
        try:
            self._write(new)
        except OSError as e:
            raise RouterError(f"cannot write upstream file {self.path}: {e.strerror}") from None
        for step in (("-t",), ("-s", "reload")):
            res = self._nginx(*step)
            if res.returncode != 0:
                self._write(old)
                detail = (res.stderr or res.stdout).strip()
                raise RouterError(
                    f"`nginx {' '.join(step)}` failed for {self.path}; the previous file is "
                    f"back in place (nginx: {detail})"
                )
        self._last = [record]

    def set_weight(self, canary_percent: int) -> None:
        self._change(weight=check_weight(canary_percent))

    def set_header_route(self, match: dict[str, str] | None) -> None:
        self._change(match=check_match(match))

    def set_mirror(self, percent: float | None) -> None:
        if check_mirror(percent) is not None:
            raise RouterError("the nginx router cannot mirror traffic; pick a strategy it "
                              "supports")
        self._last = []

    def reset(self) -> None:
        self._change(weight=0, match=None)
