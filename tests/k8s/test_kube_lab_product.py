"""The product against the lab's real API server: the install from daemonset/ applied with the built
kubectl, probe pods made by the DaemonSet controller and run by the kubelet stand-in, agents using
the API with ServiceAccount tokens from the TokenRequest API, RBAC and ValidatingAdmissionPolicy
judged by the API server, a watch across an API server restart, the fingerprint from the real
objects and processes.

Needs root, network namespaces, cgroup v2 and the harness binary (see test_kube_harness.py); without
them the tests skip locally and fail under CI=true."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cniscope.lab import netns
from cniscope.lab.kube import runtime
from cniscope.lab.kube.apiclient import ApiError
from cniscope.lab.kube.component_flags import ROLE_PREFIX
from cniscope.lab.kube.control_plane import KubeLab
from cniscope.lab.kube.install import LabInstall
from tests.caps import missing
from tests.k8s.kube_lab_kit import kubernetes_lab, pod_processes, run_in, wait_for

pytestmark = [pytest.mark.k8s, pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(1800)]

PROBES = "app.kubernetes.io/name=cniscope-probe"


def _need_cgroup_v2() -> None:
    if runtime.cgroup_root() is None:
        missing("no cgroup v2 hierarchy for the lab's pod cgroups")


@pytest.fixture(scope="module")
def klab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KubeLab, LabInstall]]:
    _need_cgroup_v2()
    with kubernetes_lab(tmp_path_factory.mktemp("kubeprod"), "iptables") as got:
        yield got


@pytest.fixture(scope="module")
def klab_nft(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KubeLab, LabInstall]]:
    _need_cgroup_v2()
    with kubernetes_lab(tmp_path_factory.mktemp("kubeprodnft"), "nftables") as got:
        yield got


def _pods(kube: KubeLab) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(kube.kubectl("get", "pods", "-A", "-o", "json"))["items"]
    return items


def test_kubectl_shows_ready_nodes_and_running_probe_pods(klab: tuple[KubeLab, LabInstall]) -> None:
    kube, _ = klab
    lab = kube.lab
    st = kube.status()
    assert st is not None
    table = subprocess.run([sys.executable, "-m", "cniscope.cli", "lab", "kubectl", "--name", lab.spec.name,
                            "get", "nodes,pods", "-A"], capture_output=True, text=True, check=True,
                           timeout=60, env={**os.environ, "CNISCOPE_LAB_DIR": str(lab.dir.parent)}).stdout
    for n in lab.nodes():
        assert re.search(rf"^node/{n.name}\s+Ready\s", table, re.M), table
    probe_rows = [ln for ln in table.splitlines() if ln.startswith("cniscope-probe ")]
    assert len(probe_rows) == len(lab.nodes()), table
    assert all(" 1/1 " in r and " Running " in r for r in probe_rows), table
    pods = [p for p in _pods(kube) if p["metadata"]["namespace"] == "cniscope-probe"]
    nodes = {n.name: n for n in lab.nodes()}
    assert sorted(p["spec"]["nodeName"] for p in pods) == sorted(nodes)
    for p in pods:
        node = nodes[p["spec"]["nodeName"]]
        assert p["status"]["podIP"] in [lp["ip"] for lp in node.pods]
        assert p["spec"]["containers"][0]["image"] == runtime.LAB_IMAGE
        # the probe pod's process serves in that pod namespace, in a cgroup named after the pod
        cg = runtime.lab_cgroup(lab.spec.name)
        assert cg is not None
        pids = (cg / node.name / f"pod{p['metadata']['uid']}" / "cgroup.procs").read_text().split()
        assert len(pids) == 2, pids      # the sandbox and `cniscope probe-pod`
        cmd = Path(f"/proc/{pids[1]}/cmdline").read_bytes().split(b"\0")
        assert b"probe-pod" in cmd
        assert os.stat(f"/proc/{pids[1]}").st_uid == 65532   # runAsUser of the pod's securityContext
    assert set(pod_processes(lab.spec.name))
    # the install's objects are the API server's now
    vap = json.loads(kube.kubectl("get", "validatingadmissionpolicy", "cniscope-collector-services", "-o", "json"))
    assert vap["spec"]["failurePolicy"] == "Fail"
    assert json.loads(kube.kubectl("get", "deployment", "-n", "cniscope", "cniscope-collector", "-o",
                                   "json"))["spec"]["replicas"] == 0


def test_agents_find_their_probe_pods_through_the_api(klab: tuple[KubeLab, LabInstall]) -> None:
    from cniscope.client.grpc_collector import list_nodes

    kube, _ = klab
    pods = {p["spec"]["nodeName"]: p for p in _pods(kube) if p["metadata"]["namespace"] == "cniscope-probe"}
    for n in kube.lab.nodes():
        log = Path(kube.lab.dir / "logs" / f"agent-{n.name}.log")
        name, ip = pods[n.name]["metadata"]["name"], pods[n.name]["status"]["podIP"]
        said = f"probe pod {name} ({ip}) on {n.name}: netns /proc/"
        def found(log: Path = log, said: str = said) -> str | None:
            return next((ln for ln in log.read_text().splitlines() if said in ln), None)

        line = wait_for(f"{n.name}'s agent found its probe pod", found)
        pid = re.search(r"netns /proc/(\d+)/ns/net", line)
        assert pid, line
        # the process it found is in the pod's cgroup and in the lab pod namespace that has the pod's IP
        assert f"pod{pods[n.name]['metadata']['uid']}" in Path(f"/proc/{pid.group(1)}/cgroup").read_text()
        lab_ns = next(p["netns"] for p in n.pods if p["ip"] == ip)
        assert os.stat(f"/proc/{pid.group(1)}/ns/net").st_ino == os.stat(netns.NETNS_DIR / lab_ns).st_ino
    states = asyncio.run(list_nodes(kube.lab.local_collector, deadline=5))
    assert {s.node: s.pod_ip for s in states} == {n: p["status"]["podIP"] for n, p in pods.items()}


def test_the_collector_checks_identities_as_the_install_says(klab: tuple[KubeLab, LabInstall]) -> None:
    """The base install turns Kubernetes identities on: each lab agent was admitted by its pod's
    projected token (audience cniscope) and speaks for its own node; a caller without a token, or with
    the API server's own token of an agent, is refused; the lab operator's token (cniscope-admin) views."""
    import grpc

    from cniscope.api.v1 import cluster_pb2, cluster_pb2_grpc
    from cniscope.client.grpc_collector import list_nodes
    from cniscope.core import grpcutil, security
    from cniscope.lab.kube.install import agent_token_dir

    kube, install = klab
    assert install.collector_env()["CNISCOPE_KUBE_AUTH"] == "on"
    states = asyncio.run(list_nodes(kube.lab.local_collector, deadline=5))    # the operator's token
    assert sorted(s.node for s in states if s.status == 1) == [n.name for n in kube.lab.nodes()]
    for n in kube.lab.nodes():   # what each agent presented: its pod's projected token, audience cniscope
        assert install.agent_env(n)["CNISCOPE_TOKEN_FILE"] == str(install.agent_token(n.name))
        assert install.agent_token(n.name).read_text().strip() != (
            agent_token_dir(kube.token_root, n.name) / "token").read_text().strip()
    api_token = (agent_token_dir(kube.token_root, "node1") / "token").read_text().strip()

    async def view(token: str | None) -> grpc.StatusCode:
        async with grpcutil.insecure_channel(kube.lab.local_collector) as ch:
            try:
                await cluster_pb2_grpc.ClusterStub(ch).ListNodes(cluster_pb2.ListNodesRequest(), timeout=20,
                                                                 metadata=security.bearer_metadata(token))
            except grpc.aio.AioRpcError as exc:
                return exc.code()
        return grpc.StatusCode.OK

    assert asyncio.run(view(None)) == grpc.StatusCode.UNAUTHENTICATED
    assert asyncio.run(view(api_token)) in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
    assert asyncio.run(view(install.people_token.read_text().strip())) == grpc.StatusCode.OK


AGENT_CREATES_SERVICE = """
import json
from cniscope.collector.runs.service_scaler import ServiceScaler
from cniscope.core import kubeapi
from cniscope.core.errors import Unavailable
scaler = ServiceScaler("cniscope-probe", kubeapi.api_client())
try:
    kubeapi.call(scaler.core.create_namespaced_service, "cniscope-probe", scaler.service_body(0, "rbac-test"),
                 what="create service")
    print(json.dumps({"error": ""}))
except Unavailable as exc:
    print(json.dumps({"error": str(exc)}))
"""


def test_agent_serviceaccount_is_refused_services_with_a_real_403(klab: tuple[KubeLab, LabInstall]) -> None:
    kube, install = klab
    node = kube.lab.nodes()[0]
    got = run_in(node.netns, install.agent_env(node), AGENT_CREATES_SERVICE)
    assert "403" in got["error"], got
    assert 'User "system:serviceaccount:cniscope:cniscope-agent" cannot create resource "services"' in got["error"]


COLLECTOR_CREATES = """
import json
from kubernetes import client
from cniscope.collector.runs.service_scaler import ServiceScaler
from cniscope.core import kubeapi
from cniscope.core.errors import Unavailable
api = kubeapi.api_client()
core = client.CoreV1Api(api)
scaler = ServiceScaler("cniscope-probe", api, prefix="admission-test")
def attempt(ns, body):
    try:
        kubeapi.call(core.create_namespaced_service, ns, body, what="create service")
        return ""
    except Unavailable as exc:
        return str(exc)
def svc(name, labelled=True, **spec):
    md = {"name": name, "labels": {"app.kubernetes.io/managed-by": "cniscope"} if labelled else {}}
    return {"apiVersion": "v1", "kind": "Service", "metadata": md,
            "spec": {"ports": [{"port": 7411, "targetPort": 7421}], **spec}}
out = {}
try:
    out["scaler"] = scaler.create_services(2, "admission-test")
    out["nodeport"] = attempt("cniscope-probe", svc("np", type="NodePort"))
    out["unlabelled"] = attempt("cniscope-probe", svc("plain", labelled=False))
    out["external_ips"] = attempt("cniscope-probe", svc("ext", externalIPs=["198.18.0.99"]))
    out["other_namespace"] = attempt("default", svc("elsewhere"))
finally:
    out["deleted"] = scaler.delete_all()
print(json.dumps(out))
"""


def test_collector_serviceaccount_gets_only_what_the_admission_policy_allows(
        klab: tuple[KubeLab, LabInstall]) -> None:
    kube, install = klab
    got = run_in(kube.lab.fabric, install.collector_env(), COLLECTOR_CREATES)
    assert got["scaler"] == ["admission-test-00000", "admission-test-00001"]
    assert got["deleted"] == 2
    vap = "ValidatingAdmissionPolicy 'cniscope-collector-services'"
    assert "403" in got["nodeport"]
    assert vap in got["nodeport"]
    assert "ClusterIP Services only" in got["nodeport"]
    assert "403" in got["unlabelled"]
    assert vap in got["unlabelled"]
    assert "managed-by=cniscope" in got["unlabelled"]
    assert "403" in got["external_ips"]
    assert "externalIPs" in got["external_ips"]
    # RBAC refuses before admission: no grant outside cniscope-probe
    assert 'cannot create resource "services" in API group "" in the namespace "default"' in got["other_namespace"]
    left = json.loads(kube.kubectl("get", "services", "-n", "cniscope-probe", "-o", "json"))["items"]
    assert not [s["metadata"]["name"] for s in left]


WATCH = """
import json, logging, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(name)s %(message)s")
from cniscope.agent.cluster_api import ClusterView
view = ClusterView.connect("on")
pod = view.probe_pod("{node}", "cniscope-probe", "app.kubernetes.io/name=cniscope-watch-test", timeout=240)
print(json.dumps(None if pod is None else {{"name": pod.name, "uid": pod.uid, "ip": pod.ip}}))
"""


def test_probe_pod_watch_survives_an_api_server_restart(klab: tuple[KubeLab, LabInstall]) -> None:
    """The agent's watch is cut by the API server's restart; resuming from its resourceVersion gets 410
    Gone from the new server's fresh watch cache; it lists again and still sees the pod appear."""
    kube, install = klab
    node = kube.lab.nodes()[0]
    proc = subprocess.Popen(netns.nsenter_argv(node.netns, [sys.executable, "-c", WATCH.format(node=node.name)]),
                            env={**os.environ, **install.agent_env(node)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(proc.stderr or []), daemon=True)
    reader.start()
    api = kube.client()
    try:
        wait_for("the agent's watch is open", lambda: any("watching pods in" in ln for ln in err), timeout=60)
        for i in range(3):   # the resourceVersion moves past the watch's while it is open
            api.create("/api/v1/namespaces/default/configmaps", {
                "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"rv-bump-{i}"}})
        old_pid, new_pid = kube.restart("apiserver")
        assert old_pid != new_pid
        assert _gone(old_pid)
        wait_for("410 Gone, then a new list", lambda: any("410 Gone): listing again" in ln for ln in err),
                 timeout=120)
        pod = api.create("/api/v1/namespaces/cniscope-probe/pods", {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "watch-test", "labels": {"app.kubernetes.io/name": "cniscope-watch-test"}},
            "spec": {"nodeName": node.name, "automountServiceAccountToken": False,
                     "securityContext": {"runAsNonRoot": True, "runAsUser": 65532,
                                         "seccompProfile": {"type": "RuntimeDefault"}},
                     "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
                                     "securityContext": {"allowPrivilegeEscalation": False,
                                                         "capabilities": {"drop": ["ALL"]}}}]}})
        out, _ = proc.communicate(timeout=120)
        got = json.loads(out.strip().splitlines()[-1])
        assert got is not None, "".join(err[-40:])
        assert got["uid"] == pod["metadata"]["uid"]
        assert got["ip"] in [p["ip"] for p in node.pods]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        try:
            api.request("DELETE", "/api/v1/namespaces/cniscope-probe/pods/watch-test")
        except ApiError as exc:
            if exc.status != 404:
                raise
        api.close()


def _gone(pid: int) -> bool:
    """Exited: no process, or a zombie its parent (this test process, which spawned it) has not reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


FINGERPRINT = """
import json
from cniscope.agent.cluster_api import ClusterView
from cniscope.core.fingerprint import derive
fp = derive(ClusterView.connect("on").objects())
print(json.dumps(fp.to_dict()))
"""


@pytest.mark.parametrize("which", ["iptables", "nftables"])
def test_fingerprint_reads_the_kube_proxy_mode_from_objects_and_process(
        which: str, request: pytest.FixtureRequest) -> None:
    from cniscope.client.grpc_collector import list_nodes

    kube, install = request.getfixturevalue("klab" if which == "iptables" else "klab_nft")
    node = kube.lab.nodes()[0]
    api_only = run_in(node.netns, install.agent_env(node), FINGERPRINT)
    assert api_only["kube_proxy"] == which
    assert api_only["sources"]["kube_proxy"] == "API: ConfigMap kube-system/kube-proxy"

    def reported() -> dict[str, Any] | None:
        out = {}
        for st in asyncio.run(list_nodes(kube.lab.local_collector, deadline=5)):
            for u in st.capabilities.units:
                if u.name == "cluster" and u.WhichOneof("detail") == "cluster":
                    fp = u.cluster.fingerprint
                    out[st.node] = (fp.kube_proxy, fp.source, {s.fact: s.source for s in fp.sources})
        return out if len(out) == len(kube.lab.nodes()) else None

    for name, (mode, source, sources) in wait_for("every agent's cluster report", reported).items():
        assert mode == which, name
        assert source == "kubernetes+node", name
        assert "/proxyMode on 127.0.0.1:10249" in sources["kube_proxy"], sources


def test_lab_status_names_the_api_and_admin_kubeconfig(klab: tuple[KubeLab, LabInstall]) -> None:
    kube, _ = klab
    out = subprocess.run([sys.executable, "-m", "cniscope.cli", "lab", "status", "-o", "json", "--name",
                          kube.lab.spec.name], capture_output=True, text=True, check=True, timeout=60,
                         env={**os.environ, "CNISCOPE_LAB_DIR": str(kube.lab.dir.parent)}).stdout
    k = json.loads(out)["kubernetes"]
    assert k["api_address"] == "198.18.0.4:6443"
    assert k["kubeconfig"] == str(kube.admin_kubeconfig)
    assert Path(k["kubeconfig"]).is_file()
    assert k["install"].startswith("kubectl apply -k ")
    assert all(k["processes"].values()), k["processes"]
    assert ROLE_PREFIX + "apiserver" in [p["role"] for p in json.loads(out)["processes"]]
