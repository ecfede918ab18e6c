"""The real kube-apiserver test cluster does what the routers will rely on.

Each test shows one behaviour of the REAL server (tests/support/kube_cluster.py) that the old
HTTP double did not have or only imitated: CEL rules from the upstream CRDs, pruning of unknown
fields, resourceVersion conflicts, watches, the status subresource, RBAC for impersonated users
and ServiceAccount tokens, and the fault proxy's errors reaching the `kubernetes` client.
"""

from __future__ import annotations

import contextlib
import copy
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from tests.support.fault_proxy import WRITE_METHODS, FaultProxy
from tests.support.kube_cluster import REPO, ClusterError, KubeCluster, crd_files, schema_dir

pytestmark = pytest.mark.kube

ISTIO = ("networking.istio.io", "v1", "virtualservices")
GATEWAY = ("gateway.networking.k8s.io", "v1", "httproutes")


def virtual_service(ns: str, name: str = "checkout", **http0: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"hosts": ["checkout"], "http": [{
            "name": "primary",
            "route": [{"destination": {"host": "checkout", "subset": "stable"}, "weight": 90},
                      {"destination": {"host": "checkout", "subset": "canary"}, "weight": 10}],
            **http0}]},
    }


def http_route(ns: str, name: str = "checkout", rules: list[dict[str, Any]] | None = None
               ) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"parentRefs": [{"name": "public"}],
                 "rules": rules if rules is not None else [{
                     "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                     "backendRefs": [{"name": "checkout-v1", "port": 80, "weight": 90},
                                     {"name": "checkout-v2", "port": 80, "weight": 10}]}]},
    }


def create(api: client.ApiClient, ref: tuple[str, str, str], obj: dict[str, Any],
           **kw: Any) -> dict[str, Any]:
    group, version, plural = ref
    return client.CustomObjectsApi(api).create_namespaced_custom_object(
        group, version, obj["metadata"]["namespace"], plural, obj, **kw)


def error_of(exc: ApiException) -> dict[str, Any]:
    return json.loads(exc.body)


def crd_messages(file: str) -> set[str]:
    """Every CEL rule message (`x-kubernetes-validations`) in a shared CRD file."""
    out: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for rule in node.get("x-kubernetes-validations", []):
                out.add(rule.get("message", rule["rule"]))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(yaml.load((schema_dir() / file).read_text(), Loader=yaml.CSafeLoader))
    return out


def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """check()'s result once it stops raising (RBAC caches lag a write by a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except (ApiException, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# ------------------------------------------------------------------------------ the cluster

def test_crds_established_and_tls_verified(kube_cluster: KubeCluster) -> None:
    # (raw JSON: the client's models take seconds to build 3 MB of CRDs)
    crds = kube_cluster.request("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
    established = {c["metadata"]["name"] for c in crds["items"]
                   if any(x["type"] == "Established" and x["status"] == "True"
                          for x in c["status"]["conditions"])}
    wanted = {yaml.load(f.read_text(), Loader=yaml.CSafeLoader)["metadata"]["name"]
              for f in crd_files()}
    assert len(wanted) == 11 and wanted <= established
    # kubectl with the written kubeconfig: the CA is embedded and verified, never skipped
    config = json.loads(kube_cluster.kubeconfig.read_text())
    assert "certificate-authority-data" in config["clusters"][0]["cluster"]
    assert "insecure-skip-tls-verify" not in kube_cluster.kubeconfig.read_text()
    version = json.loads(kube_cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == f"v{kube_cluster.version}"
    # a client trusting another CA refuses the server
    other = client.Configuration()
    other.host, other.retries = kube_cluster.server, False
    other.ssl_ca_cert = "/etc/ssl/certs/ca-certificates.crt"
    with pytest.raises(ApiException, match="CERTIFICATE_VERIFY_FAILED"):
        client.VersionApi(client.ApiClient(other)).get_code()


def test_missing_binary_fails_naming_the_fix(tmp_path: Any, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    monkeypatch.setenv("CANARY_CACHE", str(tmp_path))
    cluster = KubeCluster(tmp_path / "state")
    with pytest.raises(ClusterError, match=r"kube-apiserver .* is missing.*make test.*sysdeps"):
        cluster.start()
    assert not (tmp_path / "state").exists()


def test_started_by_hand_start_env_status_stop(tmp_path: Any) -> None:
    """scripts/kube-test-cluster.sh's entry point: a cluster that outlives its command."""
    state = tmp_path / "by-hand"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tests.support.kube_cluster", *args,
                               "--state-dir", str(state)], cwd=REPO, capture_output=True,
                              text=True, timeout=240, check=False)

    started = run("start", "--no-crds")
    try:
        assert started.returncode == 0, started.stderr
        env = run("env").stdout
        assert f"export KUBECONFIG={state / 'kubeconfig'}" in env
        status = json.loads(run("status").stdout)
        assert status["rss_mb"]["kube-apiserver"] > 0
        attached = KubeCluster.attach(state)
        assert attached.running()
        assert attached.request("GET", "/api/v1/namespaces/default")["metadata"]["name"] == (
            "default")
    finally:
        stopped = run("stop")
    assert stopped.returncode == 0 and not state.exists()
    assert not attached.running()
    assert run("status").returncode == 1


def test_not_ready_in_time_fails_with_the_log_and_cleans_up(tmp_path: Any) -> None:
    state = tmp_path / "slow"
    with pytest.raises(ClusterError,
                       match=r"(?s)(etcd|kube-apiserver) was not ready after 0.5 s .*last lines"):
        KubeCluster(state, startup_timeout=0.5).start()
    assert not state.exists()
    leftovers = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if str(state).encode() in cmdline.read_bytes():
                leftovers.append(cmdline.parent.name)
    assert leftovers == []


# ------------------------------------------------------------------------------ validation

def test_cel_rule_rejects_virtualservice_timeout(kube_api: client.ApiClient,
                                                 kube_namespace: str) -> None:
    message = "must be a valid duration greater than 1ms"
    assert message in crd_messages("istio-networking-virtualservice.crd.yaml")
    with pytest.raises(ApiException) as exc:
        create(kube_api, ISTIO, virtual_service(kube_namespace, timeout="500us"))
    assert exc.value.status == 422
    err = error_of(exc.value)
    assert err["reason"] == "Invalid"
    assert [{k: c.get(k) for k in ("field", "message")} for c in err["details"]["causes"]] == [
        {"field": "spec.http[0].timeout", "message": f'Invalid value: "500us": {message}'}]
    create(kube_api, ISTIO, virtual_service(kube_namespace, timeout="5s"))


def test_cel_rules_reject_invalid_httproutes(kube_api: client.ApiClient,
                                             kube_namespace: str) -> None:
    messages = crd_messages("gateway-api-httproute.crd.yaml")
    backends = [{"name": "checkout-v1", "port": 80}]
    cases = {
        "value must be an absolute path and start with '/' when type one of ['Exact', "
        "'PathPrefix']": [{"matches": [{"path": {"type": "PathPrefix", "value": "api"}}],
                           "backendRefs": backends}],
        "RequestRedirect filter must not be used together with backendRefs": [{
            "filters": [{"type": "RequestRedirect", "requestRedirect": {"scheme": "https"}}],
            "backendRefs": backends}],
        "While 16 rules and 64 matches per rule are allowed, the total number of matches "
        "across all rules in a route must be less than 128": [
            {"matches": [{"path": {"type": "PathPrefix", "value": f"/r{r}/m{m}"}}
                         for m in range(50)], "backendRefs": backends} for r in range(3)],
    }
    for message, rules in cases.items():
        assert message in messages
        with pytest.raises(ApiException) as exc:
            create(kube_api, GATEWAY, http_route(kube_namespace, "bad", rules))
        assert exc.value.status == 422, exc.value.body
        assert message in error_of(exc.value)["message"]
    # schema limits (not CEL) are enforced too: at most 16 rules
    with pytest.raises(ApiException, match="Too many: 17: must have at most 16 items"):
        create(kube_api, GATEWAY, http_route(kube_namespace, "bad",
                                             [{"backendRefs": backends}] * 17))


def test_unknown_fields_pruned_or_refused_when_strict(kube_api: client.ApiClient,
                                                      kube_namespace: str) -> None:
    route = http_route(kube_namespace)
    route["spec"]["rules"][0]["backendRefs"][0]["wieght"] = 50  # a typo
    route["spec"]["canaryNote"] = "not in the schema"
    stored = create(kube_api, GATEWAY, route)
    assert "canaryNote" not in stored["spec"]
    assert stored["spec"]["rules"][0]["backendRefs"][0] == {
        "group": "", "kind": "Service", "name": "checkout-v1", "port": 80, "weight": 90}
    # server-side defaults were applied as well: group/kind above, the match's path here
    assert stored["spec"]["rules"][0]["matches"] == [{"path": {"type": "PathPrefix",
                                                               "value": "/"}}]
    with pytest.raises(ApiException) as exc:
        create(kube_api, GATEWAY, {**route, "metadata": {**route["metadata"], "name": "strict"}},
               field_validation="Strict")
    assert exc.value.status == 400
    assert 'unknown field "spec.canaryNote"' in error_of(exc.value)["message"]


# ------------------------------------------------------------------------------ concurrency

def test_stale_resource_version_gives_409(kube_api: client.ApiClient,
                                          kube_namespace: str) -> None:
    api = client.CustomObjectsApi(kube_api)
    first = create(kube_api, ISTIO, virtual_service(kube_namespace))
    assert first["metadata"]["generation"] == 1
    # a foreign writer changes the weights
    second = api.patch_namespaced_custom_object(
        *ISTIO[:2], kube_namespace, ISTIO[2], "checkout",
        {"spec": {"http": [{"name": "primary", "route": [
            {"destination": {"host": "checkout", "subset": "stable"}, "weight": 50},
            {"destination": {"host": "checkout", "subset": "canary"}, "weight": 50}]}]}})
    assert second["metadata"]["generation"] == 2
    assert second["metadata"]["resourceVersion"] != first["metadata"]["resourceVersion"]
    stale = copy.deepcopy(first)
    stale["spec"]["http"][0]["route"][1]["weight"] = 20
    with pytest.raises(ApiException) as exc:
        api.replace_namespaced_custom_object(*ISTIO[:2], kube_namespace, ISTIO[2], "checkout",
                                             stale)
    assert exc.value.status == 409
    assert error_of(exc.value)["reason"] == "Conflict"
    assert "the object has been modified" in error_of(exc.value)["message"]
    # the routers' write: a merge patch carrying the read's resourceVersion, stale here
    with pytest.raises(ApiException) as exc:
        api.patch_namespaced_custom_object(
            *ISTIO[:2], kube_namespace, ISTIO[2], "checkout",
            {"metadata": {"resourceVersion": first["metadata"]["resourceVersion"]},
             "spec": {"http": stale["spec"]["http"]}})
    assert exc.value.status == 409
    # a metadata-only change does not bump the generation
    third = api.patch_namespaced_custom_object(*ISTIO[:2], kube_namespace, ISTIO[2], "checkout",
                                               {"metadata": {"labels": {"a": "b"}}})
    assert third["metadata"]["generation"] == 2


def test_watch_sees_a_change(kube_api: client.ApiClient, kube_namespace: str) -> None:
    api = client.CustomObjectsApi(kube_api)
    create(kube_api, ISTIO, virtual_service(kube_namespace))
    rv = api.list_namespaced_custom_object(*ISTIO[:2], kube_namespace,
                                           ISTIO[2])["metadata"]["resourceVersion"]
    api.patch_namespaced_custom_object(*ISTIO[:2], kube_namespace, ISTIO[2], "checkout",
                                       {"metadata": {"annotations": {"step": "2"}}})
    api.delete_namespaced_custom_object(*ISTIO[:2], kube_namespace, ISTIO[2], "checkout")
    w = watch.Watch()
    seen = []
    for event in w.stream(api.list_namespaced_custom_object, *ISTIO[:2], kube_namespace,
                          ISTIO[2], resource_version=rv, timeout_seconds=10):
        seen.append((event["type"], event["object"]["metadata"].get("annotations", {})))
        if event["type"] == "DELETED":
            w.stop()
    assert seen == [("MODIFIED", {"step": "2"}), ("DELETED", {"step": "2"})]


def test_status_subresource(kube_api: client.ApiClient, kube_namespace: str) -> None:
    api = client.CustomObjectsApi(kube_api)
    vs = virtual_service(kube_namespace)
    vs["status"] = {"observedGeneration": 7}
    created = create(kube_api, ISTIO, vs)
    assert "status" not in created or created["status"] == {}  # ignored on create
    after = api.patch_namespaced_custom_object_status(
        *ISTIO[:2], kube_namespace, ISTIO[2], "checkout",
        {"status": {"observedGeneration": 1, "conditions": [
            {"type": "Reconciled", "status": "True"}]}})
    assert after["status"]["observedGeneration"] == 1
    assert after["metadata"]["generation"] == 1  # status writes do not bump it
    # a write to the main resource leaves status alone, and a status write leaves spec alone
    after["status"] = {"observedGeneration": 99}
    after["spec"]["http"][0]["route"][1]["weight"] = 30
    main = api.replace_namespaced_custom_object(*ISTIO[:2], kube_namespace, ISTIO[2],
                                                "checkout", after)
    assert main["status"]["observedGeneration"] == 1
    assert main["spec"]["http"][0]["route"][1]["weight"] == 30


# ------------------------------------------------------------------------------ RBAC

def test_rbac_for_impersonated_and_token_service_accounts(kube_cluster: KubeCluster,
                                                          kube_api: client.ApiClient,
                                                          kube_namespace: str) -> None:
    ns = kube_namespace
    core, rbac = client.CoreV1Api(kube_api), client.RbacAuthorizationV1Api(kube_api)
    core.create_namespaced_service_account(ns, {"metadata": {"name": "canary-analyzer"}})
    sa_user = f"system:serviceaccount:{ns}:canary-analyzer"
    as_sa = kube_cluster.api_client(user=sa_user)
    token = kube_cluster.service_account_token(ns, "canary-analyzer")
    with_token = kube_cluster.api_client(token=token)

    review = client.AuthenticationV1Api(with_token).create_self_subject_review(
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    assert review.status.user_info.username == sa_user
    assert f"system:serviceaccounts:{ns}" in review.status.user_info.groups

    for api in (as_sa, with_token):
        with pytest.raises(ApiException) as exc:
            client.CustomObjectsApi(api).list_namespaced_custom_object(*ISTIO[:2], ns, ISTIO[2])
        assert exc.value.status == 403
        assert (f'User "{sa_user}" cannot list resource "virtualservices"'
                in error_of(exc.value)["message"])

    rbac.create_namespaced_role(ns, {"metadata": {"name": "router"}, "rules": [{
        "apiGroups": ["networking.istio.io"], "resources": ["virtualservices"],
        "verbs": ["get", "list", "watch", "patch", "create"]}]})
    rbac.create_namespaced_role_binding(ns, {
        "metadata": {"name": "router"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "router"},
        "subjects": [{"kind": "ServiceAccount", "name": "canary-analyzer", "namespace": ns}]})
    for api in (as_sa, with_token):
        custom = client.CustomObjectsApi(api)
        eventually(lambda c=custom: c.list_namespaced_custom_object(*ISTIO[:2], ns, ISTIO[2]))
    create(as_sa, ISTIO, virtual_service(ns))
    with pytest.raises(ApiException) as exc:  # delete is not in the Role
        client.CustomObjectsApi(with_token).delete_namespaced_custom_object(
            *ISTIO[:2], ns, ISTIO[2], "checkout")
    assert exc.value.status == 403
    can = kube_cluster.kubectl("auth", "can-i", "delete", "virtualservices.networking.istio.io",
                               "-n", ns, user=sa_user, check=False)
    assert can.stdout.strip() == "no"


def test_rbac_impersonated_user_with_several_groups(kube_cluster: KubeCluster,
                                                    kube_api: client.ApiClient,
                                                    kube_namespace: str) -> None:
    ns = kube_namespace
    rbac = client.RbacAuthorizationV1Api(kube_api)
    # not the built-in "view": admin/edit/view are aggregated ClusterRoles, filled by
    # kube-controller-manager, which does not run here (they have no rules)
    rbac.create_namespaced_role(ns, {"metadata": {"name": "configmap-reader"}, "rules": [{
        "apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]})
    rbac.create_namespaced_role_binding(ns, {
        "metadata": {"name": "operators-read"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "configmap-reader"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                      "name": "canary-operators"}]})
    # the group that grants access is the SECOND one: both headers must reach the server
    jane = kube_cluster.api_client(user="jane", groups=["developers", "canary-operators"])
    eventually(lambda: client.CoreV1Api(jane).list_namespaced_config_map(ns))
    alone = kube_cluster.api_client(user="jane", groups=["developers"])
    with pytest.raises(ApiException) as exc:
        client.CoreV1Api(alone).list_namespaced_config_map(ns)
    assert exc.value.status == 403


# ------------------------------------------------------------------------------ kubectl

def test_kubectl_server_side_dry_run(kube_cluster: KubeCluster, kube_namespace: str) -> None:
    good = yaml.safe_dump(virtual_service(kube_namespace))
    out = kube_cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=good)
    assert "created (server dry run)" in out.stdout
    bad = yaml.safe_dump(virtual_service(kube_namespace, timeout="1us"))
    proc = kube_cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=bad, check=False)
    assert proc.returncode != 0
    assert "must be a valid duration greater than 1ms" in proc.stderr
    assert kube_cluster.kubectl("get", "virtualservices", "-n", kube_namespace,
                                "-o", "name").stdout == ""


# ------------------------------------------------------------------------------ fault proxy

@pytest.fixture
def via_proxy(kube_cluster: KubeCluster, kube_fault_proxy: FaultProxy
              ) -> Iterator[client.ApiClient]:
    """An admin client through the fault proxy, without urllib3's retries."""
    api = kube_cluster.api_client(host=kube_fault_proxy.url, retries=False)
    yield api
    api.close()


def test_proxy_500_storm_reaches_the_client(kube_fault_proxy: FaultProxy,
                                            via_proxy: client.ApiClient,
                                            kube_namespace: str) -> None:
    create(via_proxy, ISTIO, virtual_service(kube_namespace))
    api = client.CustomObjectsApi(via_proxy)
    storm = kube_fault_proxy.inject(500, count=3, path="/virtualservices/checkout",
                                    message="etcd leader changed")
    for _ in range(3):
        with pytest.raises(ApiException) as exc:
            api.get_namespaced_custom_object(*ISTIO[:2], kube_namespace, ISTIO[2], "checkout")
        assert exc.value.status == 500
        assert error_of(exc.value)["message"] == "etcd leader changed"
    got = api.get_namespaced_custom_object(*ISTIO[:2], kube_namespace, ISTIO[2], "checkout")
    assert got["metadata"]["name"] == "checkout" and storm.hits == 3
    assert [r.status for r in kube_fault_proxy.requests][-4:] == [500, 500, 500, 200]
    assert ("networking.istio.io", "virtualservices", "get") in kube_fault_proxy.calls()


def test_proxy_409_on_writes_only(kube_fault_proxy: FaultProxy, via_proxy: client.ApiClient,
                                  kube_namespace: str) -> None:
    create(via_proxy, ISTIO, virtual_service(kube_namespace))
    api = client.CustomObjectsApi(via_proxy)
    kube_fault_proxy.inject(409, count=2, method=WRITE_METHODS, path="/virtualservices/")
    patch = {"metadata": {"labels": {"step": "1"}}}
    api.get_namespaced_custom_object(*ISTIO[:2], kube_namespace, ISTIO[2], "checkout")
    for _ in range(2):
        with pytest.raises(ApiException) as exc:
            api.patch_namespaced_custom_object(*ISTIO[:2], kube_namespace, ISTIO[2],
                                               "checkout", patch)
        assert exc.value.status == 409 and error_of(exc.value)["reason"] == "Conflict"
    done = api.patch_namespaced_custom_object(*ISTIO[:2], kube_namespace, ISTIO[2],
                                              "checkout", patch)
    assert done["metadata"]["labels"] == {"step": "1"}


def test_proxy_delay_and_timeouts(kube_cluster: KubeCluster, kube_fault_proxy: FaultProxy,
                                  via_proxy: client.ApiClient) -> None:
    version = client.VersionApi(via_proxy)
    kube_fault_proxy.inject(None, delay=0.6, count=1, path="/version")
    t0 = time.monotonic()
    assert version.get_code().git_version == f"v{kube_cluster.version}"
    assert time.monotonic() - t0 >= 0.6
    kube_fault_proxy.inject(None, delay=1.0, count=1, path="/version")
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        version.get_code(_request_timeout=0.3)


def test_proxy_dropped_connections(kube_cluster: KubeCluster, kube_fault_proxy: FaultProxy,
                                   via_proxy: client.ApiClient, kube_namespace: str) -> None:
    kube_fault_proxy.inject(drop="before", path="/version")
    with pytest.raises(urllib3.exceptions.ProtocolError):
        client.VersionApi(via_proxy).get_code()
    # with urllib3's default retries a dropped GET is retried and succeeds ...
    default = kube_cluster.api_client(host=kube_fault_proxy.url)
    kube_fault_proxy.inject(drop="before", path="/version")
    assert client.VersionApi(default).get_code().git_version == f"v{kube_cluster.version}"
    # ... but a PATCH is not: the write is applied, the answer lost (an ambiguous write)
    create(default, ISTIO, virtual_service(kube_namespace))
    kube_fault_proxy.inject(drop="after", method="PATCH")
    api = client.CustomObjectsApi(default)
    with pytest.raises(urllib3.exceptions.ProtocolError):  # not retried: PATCH is not idempotent
        api.patch_namespaced_custom_object(*ISTIO[:2], kube_namespace, ISTIO[2], "checkout",
                                           {"metadata": {"labels": {"applied": "yes"}}})
    got = api.get_namespaced_custom_object(*ISTIO[:2], kube_namespace, ISTIO[2], "checkout")
    assert got["metadata"]["labels"] == {"applied": "yes"}
    default.close()


def test_proxy_passes_watches_and_impersonation(kube_cluster: KubeCluster,
                                                kube_fault_proxy: FaultProxy,
                                                kube_namespace: str) -> None:
    as_nobody = kube_cluster.api_client(host=kube_fault_proxy.url,
                                        user=f"system:serviceaccount:{kube_namespace}:nobody")
    with pytest.raises(ApiException) as exc:
        client.CoreV1Api(as_nobody).list_namespaced_config_map(kube_namespace)
    assert exc.value.status == 403
    admin = kube_cluster.api_client(host=kube_fault_proxy.url)
    core = client.CoreV1Api(admin)
    rv = core.list_namespaced_config_map(kube_namespace).metadata.resource_version

    def later() -> None:
        time.sleep(0.3)
        kube_cluster.request("POST", f"/api/v1/namespaces/{kube_namespace}/configmaps",
                             {"metadata": {"name": "weights"}, "data": {"canary": "10"}})

    threading.Thread(target=later, daemon=True).start()
    w = watch.Watch()
    events = []
    for event in w.stream(core.list_namespaced_config_map, kube_namespace,
                          resource_version=rv, timeout_seconds=10):
        events.append((event["type"], event["object"].metadata.name))
        w.stop()
    assert events == [("ADDED", "weights")]
    assert ("", "configmaps", "watch") in kube_fault_proxy.calls()


def test_kubectl_and_plain_http_through_the_proxy(kube_cluster: KubeCluster,
                                                  kube_fault_proxy: FaultProxy,
                                                  kube_namespace: str, tmp_path: Path) -> None:
    config = kube_cluster.write_kubeconfig(tmp_path / "via-proxy", server=kube_fault_proxy.url)
    kube_fault_proxy.inject(503, count=None, method="POST", message="try later")
    got = kube_cluster.kubectl("get", "namespace", kube_namespace, "-o", "name",
                               kubeconfig=config)
    assert got.stdout.strip() == f"namespace/{kube_namespace}"
    failed = kube_cluster.kubectl("create", "configmap", "x", "-n", kube_namespace,
                                  kubeconfig=config, check=False)
    assert failed.returncode != 0 and "try later" in failed.stderr
    plain = kube_cluster.fault_proxy(tls=False)
    try:
        assert plain.url.startswith("http://")
        api = kube_cluster.api_client(host=plain.url)
        assert client.VersionApi(api).get_code().git_version == f"v{kube_cluster.version}"
    finally:
        plain.stop()
