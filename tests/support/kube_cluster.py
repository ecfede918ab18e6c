"""A real Kubernetes API server for the tests: one etcd + one kube-apiserver on loopback ports.

`KubeCluster` starts Debian's etcd and the kube-apiserver built by scripts/kube-build.sh (cached
in ~/.cache/canary-analyzer/kube-<version>/) in a private state directory, each in its own
process group, on free 127.0.0.1 ports. What it sets up:

- a CA of its own (openssl CLI) and a serving certificate for 127.0.0.1 signed by it; every
  client here VERIFIES the server against that CA (no insecure-skip-tls-verify anywhere);
- static-token authentication: one admin token (user `admin`, group `system:masters`);
- RBAC authorization (`--authorization-mode=Node,RBAC`), so impersonated users and
  ServiceAccounts get exactly what their (Cluster)Roles grant;
- service-account signing keys, so ServiceAccount tokens (TokenRequest) authenticate;
- a kubeconfig (CA embedded, admin token) for kubectl and the `kubernetes` client.

There is no kube-controller-manager, scheduler or kubelet: nothing reconciles. In particular a
deleted namespace stays `Terminating` (the namespace controller never finalizes it), no
`default` ServiceAccount appears in new namespaces, Deployments get no ReplicaSets or status,
and nothing garbage-collects. Tests create what they need and use fresh namespace names.

Use from Python (see tests/support/kube_fixtures.py for the pytest fixtures)::

    with KubeCluster() as cluster:            # start() ... stop()
        cluster.install_crds(*crd_files())      # ../shared/schemas/*.crd.yaml
        api = cluster.api_client()            # admin
        sa = cluster.api_client(user="system:serviceaccount:ns:name")   # impersonation
        cluster.kubectl("get", "crds")

and by hand (same cluster, kept running): scripts/kube-test-cluster.sh start|env|status|stop,
or `python -m tests.support.kube_cluster start|env|status|stop`.

Only the standard library, the openssl command and PyYAML (to read CRD files) are needed; the
`kubernetes` package is imported only by `api_client()`. A missing binary is a `ClusterError`
naming the command that installs it, never a skip.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from tests.support.fault_proxy import FaultProxy

KUBE_VERSION = "1.36.3"
REPO = Path(__file__).resolve().parents[2]
ADMIN_USER = "admin"
ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CIDR = "10.96.0.0/24"
STATE_FILE = "cluster.json"
HOW_TO_INSTALL = ("run `make test` (it runs scripts/sysdeps.sh, which installs etcd-server with "
                  "apt-get and builds kube-apiserver/kubectl with scripts/kube-build.sh), or run "
                  "scripts/sysdeps.sh yourself")


class ClusterError(RuntimeError):
    """The test cluster could not be started or used; the message says why and what to do."""


class KubeApiError(ClusterError):
    """The API server answered a `KubeCluster.request()` with an error status."""

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        message = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"{method} {path}: HTTP {status}: {message}")


# ------------------------------------------------------------------------------ locations

def kube_version() -> str:
    """The Kubernetes release the tests use (KUBE_VERSION overrides it, as in kube-build.sh)."""
    return os.environ.get("KUBE_VERSION", KUBE_VERSION)


def kube_bin_dir(version: str | None = None) -> Path:
    """Where scripts/kube-build.sh caches kube-apiserver and kubectl (same rules as the script)."""
    root = os.environ.get("CANARY_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "canary-analyzer")
    return Path(root) / f"kube-{version or kube_version()}"


def _binary(name: str, version: str | None = None) -> Path:
    path = kube_bin_dir(version) / name
    if not os.access(path, os.X_OK):
        raise ClusterError(f"{name} {version or kube_version()} is missing: no executable "
                           f"{path}; {HOW_TO_INSTALL}")
    return path


def etcd_binary() -> Path:
    """Debian's etcd (package etcd-server); ClusterError naming the fix when absent."""
    found = shutil.which("etcd") or ("/usr/bin/etcd" if os.access("/usr/bin/etcd", os.X_OK)
                                     else None)
    if not found:
        raise ClusterError(f"etcd is missing (not on PATH, no /usr/bin/etcd); {HOW_TO_INSTALL}")
    return Path(found)


def kubectl_binary() -> Path:
    """kubectl from the kube-build.sh cache; ClusterError naming the fix when absent."""
    return _binary("kubectl")


def schema_dir() -> Path:
    """The upstream schemas: `<repo>/../shared/schemas` (CANARY_SCHEMAS_DIR overrides it).

    In a git worktree (e.g. /work/wt/kube) `<repo>/..` has no `shared/`; the main checkout's
    `../shared/schemas` is used then.
    """
    candidates = []
    if os.environ.get("CANARY_SCHEMAS_DIR"):
        candidates.append(Path(os.environ["CANARY_SCHEMAS_DIR"]))
    candidates.append(REPO.parent / "shared" / "schemas")
    git = REPO / ".git"
    if git.is_file():  # a worktree: ".git" holds "gitdir: <main>/.git/worktrees/<name>"
        gitdir = Path(git.read_text().split("gitdir:", 1)[1].strip())
        candidates.append(gitdir.parents[2].parent / "shared" / "schemas")
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    raise ClusterError("no schema directory: looked in " + ", ".join(map(str, candidates)))


def crd_files(directory: Path | None = None) -> list[Path]:
    """Every CustomResourceDefinition file (`*.crd.yaml`) in the schema directory."""
    return sorted((directory or schema_dir()).glob("*.crd.yaml"))


def default_state_base() -> Path:
    """Where state directories go: CANARY_KUBE_STATE_BASE, $XDG_RUNTIME_DIR, /dev/shm, or TMPDIR.

    A tmpfs keeps etcd's fsyncs cheap; etcd preallocates a 64 MB WAL file there.
    """
    for c in (os.environ.get("CANARY_KUBE_STATE_BASE"), os.environ.get("XDG_RUNTIME_DIR"),
              "/dev/shm"):
        if c and os.path.isdir(c) and os.access(c, os.W_OK):
            return Path(c)
    return Path(tempfile.gettempdir())


def sweep_stale_state_dirs(base: Path | None = None) -> list[Path]:
    """Remove the state dirs (`canary-kube-<pid>-*`) of test processes that are gone (a killed
    pytest leaves its dir behind: its servers die with it, their files do not)."""
    removed = []
    for d in (base or default_state_base()).glob("canary-kube-*-*"):
        pid = d.name.split("-")[2]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists() and d.is_dir():
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (the OS's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------ certificates

def _openssl(*args: str, cwd: Path) -> None:
    if shutil.which("openssl") is None:
        raise ClusterError("the openssl command is missing (Debian: apt-get install openssl)")
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise ClusterError(f"openssl {' '.join(args)} failed: {proc.stderr.strip()}")


def make_ca(directory: Path, name: str = "canary-analyzer-test-ca") -> tuple[Path, Path]:
    """A self-signed EC P-256 CA in directory: (ca.crt, ca.key)."""
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key",
             cwd=directory)
    _openssl("req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "3650",
             "-subj", f"/CN={name}", "-out", "ca.crt",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-addext", "subjectKeyIdentifier=hash", cwd=directory)
    return directory / "ca.crt", directory / "ca.key"


def issue_cert(directory: Path, name: str, *, ca_cert: Path, ca_key: Path,
               ips: Sequence[str] = ("127.0.0.1",),
               dns: Sequence[str] = ("localhost",)) -> tuple[Path, Path]:
    """A serving certificate for ips/dns signed by the CA: (<name>.crt, <name>.key)."""
    san = ",".join([f"IP:{i}" for i in ips] + [f"DNS:{d}" for d in dns])
    (directory / f"{name}.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
        f"subjectAltName={san}\n")
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key",
             cwd=directory)
    _openssl("req", "-new", "-key", f"{name}.key", "-subj", f"/CN={name}",
             "-out", f"{name}.csr", cwd=directory)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", str(ca_cert), "-CAkey", str(ca_key),
             "-CAcreateserial", "-sha256", "-days", "3650", "-extfile", f"{name}.ext",
             "-out", f"{name}.crt", cwd=directory)
    return directory / f"{name}.crt", directory / f"{name}.key"


# ------------------------------------------------------------------------------ processes

def _pdeathsig_prefix(die_with_parent: bool) -> list[str]:
    """`setpriv --pdeathsig KILL`: the server dies with the (thread that started it in the)
    test process, so a killed pytest leaves no etcd/apiserver behind."""
    if die_with_parent and shutil.which("setpriv"):
        return ["setpriv", "--pdeathsig", "KILL", "--"]
    return []


def _alive(pid: int, expect: str) -> bool:
    """pid runs and its command line mentions expect (guards against a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return expect.encode() in cmdline and stat.rsplit(")", 1)[1].split()[0] != "Z"


def _kill_group(pid: int, expect: str, timeout: float = 10.0) -> None:
    """SIGTERM the process group led by pid, SIGKILL it after timeout, reap if our child."""
    if not _alive(pid, expect):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            if not _alive(pid, expect):
                return
            time.sleep(0.05)


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of a process in MB (VmRSS; VmHWM: its peak), 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file ('' when missing)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ------------------------------------------------------------------------------ the cluster

@dataclass
class Timings:
    """Seconds measured while starting (wall clock, this machine)."""

    certs: float = 0.0
    etcd_ready: float = 0.0
    apiserver_ready: float = 0.0
    crd_install: float = 0.0  # install_crds(), Established and served included
    crds: dict[str, float] = field(default_factory=dict)  # each CRD's create/replace call


class KubeCluster:
    """One etcd + one kube-apiserver in `state_dir`; see the module docstring.

    state_dir: a directory for certificates, tokens, etcd data, logs and the kubeconfig (when
    None, a new one under `default_state_base()`, created by start()); stop() removes it unless
    keep=True.
    die_with_parent: the servers get SIGKILL when the starting thread exits (tests); off for a
    cluster started by hand that must outlive its command.
    """

    def __init__(self, state_dir: Path | str | None = None, *, version: str | None = None,
                 startup_timeout: float = 180.0, die_with_parent: bool = True,
                 keep: bool = False) -> None:
        self.version = version or kube_version()
        if state_dir is None:
            sweep_stale_state_dirs()
        self.state_dir = Path(state_dir) if state_dir else (
            default_state_base() / f"canary-kube-{os.getpid()}-{secrets.token_hex(4)}")
        self.startup_timeout = startup_timeout
        self.die_with_parent = die_with_parent
        self.keep = keep
        self.admin_token = ""
        self.etcd_port = 0
        self.port = 0
        self.etcd_pid: int | None = None
        self.apiserver_pid: int | None = None
        self.timings = Timings()
        self._procs: list[subprocess.Popen[bytes]] = []
        self._ssl: ssl.SSLContext | None = None

    # ----------------------------------------------------------------- paths and addresses

    @property
    def server(self) -> str:
        """The API server's URL (https, 127.0.0.1)."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        """The CA that signed the serving certificate (clients verify against it)."""
        return self.state_dir / "pki" / "ca.crt"

    @property
    def kubeconfig(self) -> Path:
        """A kubeconfig for the admin user (CA embedded)."""
        return self.state_dir / "kubeconfig"

    @property
    def etcd_log(self) -> Path:
        return self.state_dir / "etcd.log"

    @property
    def apiserver_log(self) -> Path:
        return self.state_dir / "kube-apiserver.log"

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> KubeCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> KubeCluster:
        """Start etcd, then kube-apiserver; return once /readyz answers ok.

        Raises ClusterError (with the log tail) when a binary is missing, a server exits or
        /readyz is not ok within startup_timeout; whatever was started is stopped then.
        """
        try:
            apiserver, etcd = _binary("kube-apiserver", self.version), etcd_binary()
            self._prepare()
            self._start_etcd(etcd)
            self._start_apiserver(apiserver)
            self.write_kubeconfig(self.kubeconfig)
            self._save_state()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Kill the apiserver's and etcd's process groups; remove the state dir unless keep."""
        if self.apiserver_pid:
            _kill_group(self.apiserver_pid, "kube-apiserver")
        if self.etcd_pid:
            _kill_group(self.etcd_pid, "etcd")
        for p in self._procs:
            with contextlib.suppress(Exception):
                p.wait(timeout=1)
        self._procs.clear()
        self.apiserver_pid = self.etcd_pid = None
        if not self.keep:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def running(self) -> bool:
        """Both servers' processes are alive."""
        return bool(self.etcd_pid and _alive(self.etcd_pid, "etcd") and self.apiserver_pid
                    and _alive(self.apiserver_pid, "kube-apiserver"))

    def rss_mb(self, peak: bool = False) -> dict[str, float]:
        """Resident memory (MB) of etcd and kube-apiserver now (peak=True: their peaks)."""
        field = "VmHWM" if peak else "VmRSS"
        return {"etcd": rss_mb(self.etcd_pid or 0, field),
                "kube-apiserver": rss_mb(self.apiserver_pid or 0, field)}

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of both servers' logs, labelled."""
        return (f"--- {self.apiserver_log} (last {lines} lines)\n"
                f"{tail(self.apiserver_log, lines)}\n"
                f"--- {self.etcd_log} (last {lines} lines)\n{tail(self.etcd_log, lines)}")

    def _prepare(self) -> None:
        t0 = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        pki = self.state_dir / "pki"
        pki.mkdir(exist_ok=True)
        ca_cert, ca_key = make_ca(pki)
        issue_cert(pki, "apiserver", ca_cert=ca_cert, ca_key=ca_key,
                   ips=("127.0.0.1", SERVICE_CIDR.rsplit(".", 1)[0] + ".1"),
                   dns=("localhost", "kubernetes", "kubernetes.default",
                        "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"))
        _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
        _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
        self.admin_token = secrets.token_hex(24)
        tokens = self.state_dir / "tokens.csv"
        tokens.write_text(f'{self.admin_token},{ADMIN_USER},admin-uid,"system:masters"\n')
        tokens.chmod(0o600)
        self.timings.certs = time.monotonic() - t0

    def _spawn(self, cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(_pdeathsig_prefix(self.die_with_parent) + cmd,
                                    stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, cwd=self.state_dir,
                                    start_new_session=True)
        self._procs.append(proc)
        return proc

    def _wait(self, what: str, proc: subprocess.Popen[bytes], log: Path, url: str,
              ready: Any, timeout: float) -> float:
        """Poll url until ready(status, body) is true; seconds taken. ClusterError otherwise."""
        t0 = time.monotonic()
        last = ""
        while True:
            if proc.poll() is not None:
                raise ClusterError(f"{what} exited with status {proc.returncode} before it was "
                                   f"ready; last lines of {log}:\n{tail(log)}")
            try:
                status, body = self._get(url, timeout=5)
                if ready(status, body):
                    return time.monotonic() - t0
                failing = [ln for ln in body.splitlines() if ln.startswith("[-]")]
                last = f"HTTP {status}: " + ("; ".join(failing) if failing else body[-2000:])
            except (OSError, urllib.error.URLError) as exc:
                last = repr(exc)
            if time.monotonic() - t0 > timeout:
                raise ClusterError(f"{what} was not ready after {timeout:g} s at {url} "
                                   f"(last answer: {last}); last lines of {log}:\n{tail(log)}")
            time.sleep(0.1)

    def _start_etcd(self, etcd: Path) -> None:
        for attempt in range(3):  # a free port can be taken between free_port() and bind
            self.etcd_port, peer = free_port(), free_port()
            client = f"http://127.0.0.1:{self.etcd_port}"
            proc = self._spawn([
                str(etcd), "--name", "canary-test", "--data-dir", str(self.state_dir / "etcd"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", f"canary-test=http://127.0.0.1:{peer}",
                "--initial-cluster-state", "new", "--logger", "zap", "--log-outputs", "stderr",
                "--quota-backend-bytes", str(2 * 1024**3),
            ], self.etcd_log)
            self.etcd_pid = proc.pid
            try:
                self.timings.etcd_ready = self._wait(
                    "etcd", proc, self.etcd_log, f"{client}/health",
                    lambda s, b: s == 200 and '"health":"true"' in b.replace(" ", ""),
                    min(60.0, self.startup_timeout))
                return
            except ClusterError:
                if attempt == 2 or "address already in use" not in tail(self.etcd_log):
                    raise
                _kill_group(proc.pid, "etcd")
                shutil.rmtree(self.state_dir / "etcd", ignore_errors=True)

    def _start_apiserver(self, apiserver: Path) -> None:
        pki = self.state_dir / "pki"
        for attempt in range(3):
            self.port = free_port()
            proc = self._spawn([
                str(apiserver),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--cert-dir={self.state_dir / 'apiserver-certs'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--token-auth-file={self.state_dir / 'tokens.csv'}",
                "--authorization-mode=Node,RBAC",
                f"--service-account-issuer={ISSUER}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=false", "--profiling=false", "--v=1",
            ], self.apiserver_log)
            self.apiserver_pid = proc.pid
            try:
                self.timings.apiserver_ready = self._wait(
                    "kube-apiserver", proc, self.apiserver_log, f"{self.server}/readyz",
                    lambda s, b: s == 200 and b.strip() == "ok", self.startup_timeout)
                return
            except ClusterError:
                if attempt == 2 or "address already in use" not in tail(self.apiserver_log):
                    raise
                _kill_group(proc.pid, "kube-apiserver")

    # ----------------------------------------------------------------- state for start-by-hand

    def _save_state(self) -> None:
        state = {"version": self.version, "port": self.port, "etcd_port": self.etcd_port,
                 "etcd_pid": self.etcd_pid, "apiserver_pid": self.apiserver_pid,
                 "admin_token": self.admin_token, "timings": self.timings.__dict__}
        path = self.state_dir / STATE_FILE
        path.write_text(json.dumps(state, indent=2))
        path.chmod(0o600)

    @classmethod
    def attach(cls, state_dir: Path | str) -> KubeCluster:
        """The cluster a previous `start` left running in state_dir (ClusterError if none)."""
        path = Path(state_dir) / STATE_FILE
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ClusterError(f"no test cluster state in {path}: {exc}") from exc
        cluster = cls(state_dir, version=state["version"], die_with_parent=False, keep=True)
        cluster.port, cluster.etcd_port = state["port"], state["etcd_port"]
        cluster.etcd_pid, cluster.apiserver_pid = state["etcd_pid"], state["apiserver_pid"]
        cluster.admin_token = state["admin_token"]
        return cluster

    # ----------------------------------------------------------------- clients

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context verifying the server against the cluster CA."""
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=str(self.ca_file))
        return self._ssl

    def _get(self, url: str, timeout: float = 10) -> tuple[int, str]:
        req = urllib.request.Request(url)
        if url.startswith("https"):
            req.add_header("Authorization", f"Bearer {self.admin_token}")
        ctx = self.ssl_context() if url.startswith("https") else None
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
                return resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def request(self, method: str, path: str, body: Any = None, *,
                content_type: str = "application/json", token: str | None = None,
                user: str | None = None, groups: Iterable[str] = (),
                timeout: float = 30) -> Any:
        """One API call with the admin token (or token; optionally impersonating user/groups).

        Returns the decoded JSON answer; raises KubeApiError on an error status.
        """
        data = None if body is None else (body if isinstance(body, bytes)
                                          else json.dumps(body).encode())
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {token or self.admin_token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        groups = tuple(groups)
        if len(groups) > 1:  # urllib sends one value per header name; a comma list is 1 group
            raise ClusterError("request(): one impersonated group at most; use api_client() "
                               "or kubectl() for several")
        if user:
            req.add_header("Impersonate-User", user)
        for g in groups:
            req.add_header("Impersonate-Group", g)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.ssl_context()) as r:
                raw = r.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                answer: Any = json.loads(raw)
            except ValueError:
                answer = raw.decode(errors="replace")
            raise KubeApiError(method, path, exc.code, answer) from None
        return json.loads(raw) if raw else None

    def api_client(self, *, user: str | None = None, groups: Sequence[str] = (),
                   token: str | None = None, host: str | None = None,
                   ca_file: Path | None = None, retries: int | bool | None = None
                   ) -> ApiClient:
        """A `kubernetes.client.ApiClient` for this cluster, verifying TLS with the CA.

        user/groups: impersonate them (RBAC then applies to them, not to the admin). A
        ServiceAccount is `system:serviceaccount:<namespace>:<name>`; with no groups the server
        adds its groups (system:serviceaccounts, system:serviceaccounts:<namespace>).
        token: authenticate with this bearer token instead of the admin's (e.g.
        `service_account_token()`: a real ServiceAccount token, as in a pod).
        host: another URL, e.g. a FaultProxy's in front of this server.
        retries: urllib3's retries (None: its default of 3 on connection errors; False: none).
        """
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = host or self.server
        cfg.ssl_ca_cert = str(ca_file or self.ca_file)
        cfg.verify_ssl = True
        cfg.api_key = {"authorization": token or self.admin_token}
        cfg.api_key_prefix = {"authorization": "Bearer"}
        if retries is not None:
            cfg.retries = retries
        api = client.ApiClient(cfg)
        if user or groups:
            api.rest_client.pool_manager = _Impersonating(
                api.rest_client.pool_manager, user, tuple(groups))
        return api

    def service_account_token(self, namespace: str, name: str, *,
                              expiration_seconds: int = 3600,
                              audiences: Sequence[str] = ()) -> str:
        """A token for an existing ServiceAccount from the TokenRequest API (as a pod gets)."""
        spec: dict[str, Any] = {"expirationSeconds": expiration_seconds}
        if audiences:
            spec["audiences"] = list(audiences)
        answer = self.request(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
        return str(answer["status"]["token"])

    def write_kubeconfig(self, path: Path, *, server: str | None = None,
                         token: str | None = None, user: str | None = None,
                         groups: Sequence[str] = (), name: str = "canary-test") -> Path:
        """A kubeconfig (JSON, CA embedded) for server (default: this API server) and token
        (default: admin), optionally impersonating user/groups."""
        auth: dict[str, Any] = {"token": token or self.admin_token}
        if user:
            auth["as"] = user
        if groups:
            auth["as-groups"] = list(groups)
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": name,
            "clusters": [{"name": name, "cluster": {
                "server": server or self.server,
                "certificate-authority-data": base64.b64encode(
                    self.ca_file.read_bytes()).decode()}}],
            "users": [{"name": name, "user": auth}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        }
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)
        return path

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                user: str | None = None, groups: Sequence[str] = (),
                kubeconfig: Path | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the cached kubectl against this cluster (admin kubeconfig, or --as user/groups).

        kubeconfig: another one (e.g. write_kubeconfig(path, server=proxy.url)).
        check: raise ClusterError (with stdout/stderr) on a non-zero exit.
        """
        cmd = [str(_binary("kubectl", self.version)),
               f"--kubeconfig={kubeconfig or self.kubeconfig}",
               f"--cache-dir={self.state_dir / 'kubectl-cache'}"]
        if user:
            cmd.append(f"--as={user}")
        cmd += [f"--as-group={g}" for g in groups]
        cmd += list(args)
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, check=False,
                              timeout=timeout, env=env)
        if check and proc.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} exited {proc.returncode}:\n"
                               f"stdout: {proc.stdout}\nstderr: {proc.stderr}")
        return proc

    def fault_proxy(self, *, tls: bool = True) -> FaultProxy:
        """A started FaultProxy in front of this API server (TLS with a certificate signed by
        the cluster CA, so clients verify it like the server; tls=False: plain HTTP)."""
        from tests.support.fault_proxy import FaultProxy

        cert = key = None
        if tls:
            pki = self.state_dir / "pki"
            cert, key = pki / "fault-proxy.crt", pki / "fault-proxy.key"
            if not cert.exists():
                issue_cert(pki, "fault-proxy", ca_cert=self.ca_file, ca_key=pki / "ca.key")
        return FaultProxy(self.server, upstream_ca=self.ca_file, cert_file=cert,
                          key_file=key).start()

    # ----------------------------------------------------------------- CRDs and namespaces

    def install_crds(self, *paths: Path | str, timeout: float = 120.0) -> list[str]:
        """Create (or replace) the CustomResourceDefinitions in the files/directories given
        (`*.crd.yaml`, `*.yaml`, `*.yml`, `*.json` in a directory; multi-document files are
        fine; other kinds are ignored) and wait until each is Established and served.

        Returns the CRD names. Raises ClusterError on a refused CRD or when one is not
        Established within timeout.
        """
        import yaml

        started = time.monotonic()
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        files: list[Path] = []
        for p in map(Path, paths):
            if p.is_dir():
                files += sorted(f for f in p.iterdir()
                                if f.suffix in (".yaml", ".yml", ".json") and f.is_file())
            else:
                files.append(p)
        crds = [doc for f in files for doc in yaml.load_all(f.read_text(), Loader=loader)
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition"]
        base = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        names = []
        for crd in crds:
            t0 = time.monotonic()
            name = crd["metadata"]["name"]
            names.append(name)
            try:
                self.request("POST", base, crd, timeout=60)
            except KubeApiError as exc:
                if exc.status != 409:
                    raise ClusterError(f"CRD {name} refused: {exc}") from exc
                current = self.request("GET", f"{base}/{name}")
                crd = {**crd, "metadata": {**crd["metadata"], "resourceVersion":
                                           current["metadata"]["resourceVersion"]}}
                self.request("PUT", f"{base}/{name}", crd, timeout=60)
            self.timings.crds[name] = time.monotonic() - t0
        deadline = time.monotonic() + timeout
        for crd in crds:
            self._wait_established(base, crd, deadline)
        self.timings.crd_install += time.monotonic() - started
        return names

    def _wait_established(self, base: str, crd: dict[str, Any], deadline: float) -> None:
        name = crd["metadata"]["name"]
        group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
        served = [v["name"] for v in crd["spec"]["versions"] if v.get("served")]
        conditions: Any = None
        while time.monotonic() < deadline:
            current = self.request("GET", f"{base}/{name}")
            # right after the create the server answers `conditions: null`
            conditions = (current.get("status") or {}).get("conditions") or []
            if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                # discovery can lag Established by a moment; wait until every version serves it
                try:
                    if all(any(r["name"] == plural for r in self.request(
                            "GET", f"/apis/{group}/{v}")["resources"]) for v in served):
                        return
                except KubeApiError as exc:
                    if exc.status != 404:
                        raise
            time.sleep(0.1)
        raise ClusterError(f"CRD {name} not Established and served in time; conditions: "
                           f"{conditions}")

    def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> str:
        """Create a namespace (name returned)."""
        self.request("POST", "/api/v1/namespaces", {
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels or {}}})
        return name

    def delete_namespace(self, name: str) -> None:
        """Delete a namespace (it stays Terminating: no namespace controller runs here)."""
        with contextlib.suppress(KubeApiError):
            self.request("DELETE", f"/api/v1/namespaces/{name}")


class _Impersonating:
    """Wraps a urllib3 PoolManager to add Impersonate-User and one Impersonate-Group header per
    group: the `kubernetes` client's default_headers is a dict and cannot repeat a header."""

    def __init__(self, inner: Any, user: str | None, groups: tuple[str, ...]) -> None:
        self._inner, self._user, self._groups = inner, user, groups

    def request(self, method: str, url: str, *args: Any, headers: Any = None,
                **kw: Any) -> Any:
        from urllib3 import HTTPHeaderDict

        merged = HTTPHeaderDict(headers or {})
        if self._user:
            merged["Impersonate-User"] = self._user
        for g in self._groups:
            merged.add("Impersonate-Group", g)
        return self._inner.request(method, url, *args, headers=merged, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


# ------------------------------------------------------------------------------ by hand

def manual_state_dir() -> Path:
    """The state dir of the cluster started by hand: $XDG_RUNTIME_DIR or /tmp."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(base) / f"canary-kube-test-cluster-{os.getuid()}"


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kube-test-cluster",
        description="Start the tests' etcd + kube-apiserver by hand (for debugging).")
    parser.add_argument("command", choices=["start", "stop", "env", "status"])
    parser.add_argument("--state-dir", type=Path, default=None,
                        help=f"default: {manual_state_dir()}")
    parser.add_argument("--no-crds", action="store_true",
                        help="start: do not install the CRDs from ../shared/schemas")
    args = parser.parse_args(argv)
    state_dir: Path = args.state_dir or manual_state_dir()

    def attached() -> KubeCluster | None:
        try:
            return KubeCluster.attach(state_dir)
        except ClusterError:
            return None

    cluster = attached()
    if args.command == "start":
        if cluster and cluster.running():
            print(f"already running: {cluster.server} (state in {state_dir})", file=sys.stderr)
            return 0
        if cluster:
            cluster.stop()
        shutil.rmtree(state_dir, ignore_errors=True)
        state_dir.mkdir(parents=True, mode=0o700)
        cluster = KubeCluster(state_dir, die_with_parent=False, keep=True)
        try:
            cluster.start()
            if not args.no_crds:
                cluster.install_crds(*crd_files())
        except BaseException:
            cluster.keep = False
            cluster.stop()
            raise
        cluster._save_state()
        print(f"kube-apiserver {cluster.version} at {cluster.server}: etcd ready in "
              f"{cluster.timings.etcd_ready:.1f} s, /readyz in "
              f"{cluster.timings.apiserver_ready:.1f} s, CRDs in "
              f"{cluster.timings.crd_install:.1f} s; state in {state_dir}",
              file=sys.stderr)
        print('use it: eval "$(scripts/kube-test-cluster.sh env)"', file=sys.stderr)
        return 0
    if args.command == "stop":
        if cluster is None:
            print(f"no test cluster state in {state_dir}", file=sys.stderr)
            return 0
        cluster.keep = False
        cluster.stop()
        print(f"stopped; removed {state_dir}", file=sys.stderr)
        return 0
    if cluster is None or not cluster.running():
        print(f"no test cluster running (state dir {state_dir}); start one with "
              f"scripts/kube-test-cluster.sh start", file=sys.stderr)
        return 1
    if args.command == "env":
        print(f"export KUBECONFIG={cluster.kubeconfig}")
        print(f"export PATH={kube_bin_dir(cluster.version)}:$PATH")
        return 0
    print(json.dumps({"server": cluster.server, "kubeconfig": str(cluster.kubeconfig),
                      "ca": str(cluster.ca_file), "etcd": f"http://127.0.0.1:{cluster.etcd_port}",
                      "pids": {"etcd": cluster.etcd_pid,
                               "kube-apiserver": cluster.apiserver_pid},
                      "rss_mb": cluster.rss_mb(),
                      "logs": [str(cluster.etcd_log), str(cluster.apiserver_log)]}, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(_main())
    except ClusterError as exc:
        print(f"kube-test-cluster: {exc}", file=sys.stderr)
        sys.exit(1)
