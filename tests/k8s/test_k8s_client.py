"""The agent's and collector's kubernetes-client code against a local HTTP stand-in for the API server
serving recorded API objects (tests/k8s/apiserver.py): kubeconfig loading, the bearer token on every
request, watch streams, 404 and 403 handling, and the fingerprint of each benchmark scenario A–E."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cniscope.agent import cluster_api
from cniscope.agent.inspectors.cluster import inspect_cluster
from cniscope.agent.inspectors.unit import UNKNOWN
from cniscope.api.v1 import capabilities_pb2 as cap
from cniscope.collector.runs.service_scaler import MANAGED_BY, ServiceScaler
from cniscope.core import kubeapi
from cniscope.core.config import AgentConfig
from cniscope.core.errors import Unavailable
from cniscope.core.fingerprint import Fingerprint
from cniscope.core.hostpaths import HostPaths
from tests.k8s.apiserver import FakeApiServer, load_fixture

pytestmark = pytest.mark.k8s

NODE = "ip-192-168-12-34.ap-northeast-2.compute.internal"
CM = "/api/v1/namespaces/kube-system/configmaps/"
E_FLAGS = ("bandwidth-manager", "bbr", "bpf-host-routing", "bpf-masquerade", "ct-expanded", "hubble-off", "socket-lb")
EXPECTED = {
    "A": Fingerprint(cni="aws-vpc-cni", cni_version="1.19.0", kube_proxy="iptables", routing="native",
                     ipam="eni-secondary-ip"),
    "B": Fingerprint(cni="cilium", cni_version="1.16.5", kube_proxy="iptables", routing="tunnel-vxlan",
                     ipam="cluster-pool"),
    # socket LB: on whenever Cilium replaces kube-proxy (auto-enabled), so C and D have it too
    "C": Fingerprint(cni="cilium", cni_version="1.16.5", kube_proxy="ebpf", routing="tunnel-vxlan",
                     ipam="cluster-pool", tuning=("socket-lb",)),
    "D": Fingerprint(cni="cilium", cni_version="1.16.5", kube_proxy="ebpf", routing="native", ipam="eni",
                     tuning=("socket-lb",)),
    "E": Fingerprint(cni="cilium", cni_version="1.16.5", kube_proxy="ebpf", routing="native", ipam="eni",
                     tuning=E_FLAGS),
}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[FakeApiServer]:
    srv = FakeApiServer().start()
    node = load_fixture("node_m6i.json")["object"]
    srv.objects[f"/api/v1/nodes/{NODE}"] = node
    try:
        yield srv
    finally:
        srv.stop()


def env_for(api: FakeApiServer, tmp_path: Path) -> dict[str, str]:
    return {"KUBECONFIG": str(api.kubeconfig(tmp_path / "kubeconfig"))}


def view(api: FakeApiServer, tmp_path: Path) -> cluster_api.ClusterView:
    v = cluster_api.ClusterView.connect("auto", env_for(api, tmp_path))
    assert v is not None
    return v


@pytest.mark.parametrize("letter", sorted(EXPECTED))
def test_fingerprint_of_each_scenario(api: FakeApiServer, tmp_path: Path, letter: str) -> None:
    api.load(f"scenario_{letter.lower()}.json")
    fp = view(api, tmp_path).fingerprint()
    assert fp == EXPECTED[letter]
    assert fp.scenario() == letter
    assert fp.to_dict()["scenario"] == letter
    gets = [r for r in api.requests if r.method == "GET"]
    assert {r.path.rsplit("/", 1)[1] for r in gets} >= {"cilium-config", "daemonsets", "kube-proxy", "aws-node"}
    assert all(r.authorization == f"Bearer {api.token}" for r in api.requests)


def test_every_scenario_has_its_own_fingerprint() -> None:
    assert len(set(EXPECTED.values())) == 5


def test_kube_proxy_in_nftables_mode(api: FakeApiServer, tmp_path: Path) -> None:
    api.load("kube_proxy_nftables.json")
    fp = view(api, tmp_path).fingerprint()
    assert (fp.cni, fp.kube_proxy) == ("aws-vpc-cni", "nftables")
    assert fp.scenario() is None


def test_kubeadm_named_kube_proxy_configmap_is_used_when_the_eks_one_is_absent(api: FakeApiServer, tmp_path: Path) -> None:
    api.load("kube_proxy_nftables.json")
    api.objects[CM + "kube-proxy"] = api.objects.pop(CM + "kube-proxy-config")
    assert view(api, tmp_path).fingerprint().kube_proxy == "nftables"


def test_node_metadata(api: FakeApiServer, tmp_path: Path) -> None:
    info = view(api, tmp_path).node(NODE)
    assert info.instance_type == "m6i.xlarge"
    assert info.zone == "ap-northeast-2a"
    assert info.kernel == "6.1.159-182.297.amzn2023.x86_64"
    assert info.container_runtime == "containerd://2.1.5"
    assert info.internal_ip == "192.168.12.34"


def test_unknown_node_is_unavailable_not_a_crash(api: FakeApiServer, tmp_path: Path) -> None:
    with pytest.raises(Unavailable, match="not known"):
        view(api, tmp_path).node("nope")


def test_forbidden_says_which_grant_is_missing(api: FakeApiServer, tmp_path: Path) -> None:
    api.load("scenario_b.json")
    api.forbidden.add(CM + "cilium-config")
    with pytest.raises(Unavailable, match=r"get configmap kube-system/cilium-config: 403 .*forbidden"):
        view(api, tmp_path).fingerprint()


def test_a_wrong_token_is_refused(api: FakeApiServer, tmp_path: Path) -> None:
    env = env_for(api, tmp_path)
    api.token = "another-token"
    v = cluster_api.ClusterView.connect("on", env)
    assert v is not None
    with pytest.raises(Unavailable, match="401"):
        v.node(NODE)


def test_unreachable_api_server_is_unavailable(tmp_path: Path) -> None:
    srv = FakeApiServer()
    cfg = srv.kubeconfig(tmp_path / "kc")
    srv.httpd.server_close()           # the port is now closed: connection refused
    v = cluster_api.ClusterView.connect("on", {"KUBECONFIG": str(cfg)})
    assert v is not None
    with pytest.raises(Unavailable, match="unreachable"):
        v.fingerprint()


def test_no_api_wanted_in_the_lab() -> None:
    assert cluster_api.ClusterView.connect("auto", {}) is None
    assert cluster_api.ClusterView.connect("off", {"KUBERNETES_SERVICE_HOST": "10.100.0.1"}) is None
    assert kubeapi.wanted("auto", {"KUBERNETES_SERVICE_HOST": "10.100.0.1", "KUBERNETES_SERVICE_PORT": "443"})


def test_in_cluster_without_a_service_account_is_unavailable(tmp_path: Path) -> None:
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "6443",
           "CNISCOPE_SA_TOKEN": str(tmp_path / "token"), "CNISCOPE_SA_CA": str(tmp_path / "ca.crt")}
    with pytest.raises(Unavailable, match="token file does not exist"):
        cluster_api.ClusterView.connect("auto", env)


def test_cluster_unit_uses_the_api(api: FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    api.load("scenario_e.json")
    monkeypatch.setenv("KUBECONFIG", env_for(api, tmp_path)["KUBECONFIG"])
    monkeypatch.setenv("CNISCOPE_NODE", NODE)
    res = inspect_cluster(HostPaths())
    assert isinstance(res.detail, cap.ClusterDetail)
    assert res.detail.fingerprint.scenario == "E"
    assert res.detail.node.instance_type == "m6i.xlarge"
    assert res.summary.startswith("CNI cilium ")
    assert res.summary.endswith(", scenario E, from the Kubernetes API; node m6i.xlarge " + res.detail.node.zone)


def test_cluster_unit_falls_back_to_the_node_when_forbidden(api: FakeApiServer, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    api.load("scenario_e.json")
    api.forbidden.add("/apis/apps/v1/daemonsets")             # Cilium is looked for by label everywhere
    monkeypatch.setenv("KUBECONFIG", env_for(api, tmp_path)["KUBECONFIG"])
    res = inspect_cluster(HostPaths())
    assert isinstance(res.detail, cap.ClusterDetail)
    assert res.detail.fingerprint.source == "node"
    item = next(i for i in res.items if i.name == "kubernetes_api")
    assert item.state == UNKNOWN
    assert "403" in item.reason


def test_cluster_unit_without_api_reads_the_node(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    # a node whose processes the test decides (a shell and sshd, no CNI agent, no kube-proxy), so a
    # kube-proxy running elsewhere on this machine cannot change the answer
    proc, sys_root = tmp_path / "proc", tmp_path / "sys"
    for pid, comm in ((1, "systemd"), (412, "sshd"), (977, "bash")):
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "comm").write_text(comm + "\n")
        (proc / str(pid) / "cmdline").write_bytes(comm.encode() + b"\0")
    sys_root.mkdir()
    res = inspect_cluster(HostPaths(proc=proc, sys=sys_root, run=tmp_path / "run"))
    assert isinstance(res.detail, cap.ClusterDetail)
    fp = res.detail.fingerprint
    assert fp.source == "node"
    assert fp.cni == "none"           # no CNI agent among the node's processes
    assert fp.kube_proxy == "none"
    assert not res.detail.HasField("node")
    assert res.summary == ("CNI none, kube-proxy none, routing unknown, ipam unknown, "
                           "from this node (no Kubernetes API)")


# ---- probe-pod discovery ----------------------------------------------------------------------
POD_UID = "7c1e9a4b-2f3d-4e5a-9b6c-1d2e3f4a5b6c"


def probe_pod(phase: str, ip: str = "") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "cniscope-probe-x7k2p", "namespace": "cniscope-probe", "uid": POD_UID,
                         "resourceVersion": "1001", "labels": {"app.kubernetes.io/name": "cniscope-probe"}},
            "spec": {"nodeName": NODE, "containers": [{"name": "probe", "image": "cniscope"}]},
            "status": {"phase": phase, "podIP": ip, "hostIP": "192.168.12.34"}}


def fake_proc(root: Path) -> HostPaths:
    """A /proc tree in the shape containerd + the systemd cgroup driver leave on a node (cgroup v2)."""
    slice_uid = POD_UID.replace("-", "_")
    entries = {
        1: "0::/init.scope\n",
        4242: f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{slice_uid}.slice/"
              "cri-containerd-3b1f2a.scope\n",
        4100: f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{slice_uid}.slice/"
              "cri-containerd-pause77.scope\n",
        5000: "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podffff.slice/x.scope\n",
    }
    for pid, cg in entries.items():
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "cgroup").write_text(cg)
        (root / str(pid) / "comm").write_text("probe\n")
    (root / "self").mkdir()
    return HostPaths(proc=root)


def test_probe_pod_found_by_watch_once_it_runs(api: FakeApiServer, tmp_path: Path) -> None:
    api.pods.append(probe_pod("Pending"))

    def later() -> None:
        time.sleep(0.3)
        api.events.put({"type": "MODIFIED", "object": probe_pod("Running", "192.168.40.7")})

    threading.Thread(target=later, daemon=True).start()
    t0 = time.monotonic()
    pod = view(api, tmp_path).probe_pod(NODE, "cniscope-probe", "app.kubernetes.io/name=cniscope-probe", timeout=5)
    assert pod is not None
    assert (pod.ip, pod.uid, pod.phase) == ("192.168.40.7", POD_UID, "Running")
    assert time.monotonic() - t0 < 4
    lists = [r for r in api.requests if r.path.endswith("/pods")]
    assert lists[0].query["fieldSelector"] == [f"spec.nodeName={NODE}"]
    assert lists[-1].query["watch"] == ["True"] or lists[-1].query["watch"] == ["true"]


def test_no_probe_pod_on_this_node(api: FakeApiServer, tmp_path: Path) -> None:
    other = probe_pod("Running", "192.168.40.8")
    other["spec"]["nodeName"] = "another-node"
    api.pods.append(other)
    assert view(api, tmp_path).probe_pod(NODE, "cniscope-probe", "app.kubernetes.io/name=cniscope-probe") is None


def test_probe_pod_netns_from_the_pod_uid_in_cgroups(tmp_path: Path) -> None:
    paths = fake_proc(tmp_path / "proc")
    assert cluster_api.find_pod_pid(paths, POD_UID) == 4100
    assert cluster_api.pod_netns(paths, POD_UID) == str(tmp_path / "proc" / "4100" / "ns" / "net")
    with pytest.raises(Unavailable, match="hostPID"):
        cluster_api.pod_netns(paths, "00000000-0000-0000-0000-000000000000")


def test_discovery_fills_the_agent_config(api: FakeApiServer, tmp_path: Path) -> None:
    api.pods.append(probe_pod("Running", "192.168.40.7"))
    cfg = AgentConfig(node=NODE)
    pod = cluster_api.discover_probe_pod(cfg, fake_proc(tmp_path / "proc"), view(api, tmp_path), timeout=1)
    assert pod is not None
    assert cfg.pod_ip == "192.168.40.7"
    assert cfg.pod_netns.endswith("/4100/ns/net")


# ---- collector: Services of a scaling run -----------------------------------------------------
def test_services_created_and_garbage_collected_by_label(api: FakeApiServer, tmp_path: Path) -> None:
    api.services["cniscope-probe"] = {"keep-me": {"metadata": {"name": "keep-me", "labels": {"app": "x"}},
                                                  "spec": {}}}
    scaler = ServiceScaler("cniscope-probe", kubeapi.api_client(env_for(api, tmp_path)))
    names = scaler.create_services(5, run="r1")
    assert len(names) == 5
    store = api.services["cniscope-probe"]
    assert len(store) == 6
    made = store[names[0]]
    assert made["metadata"]["labels"][MANAGED_BY] == "cniscope"
    assert made["spec"]["selector"] == {"app.kubernetes.io/name": "cniscope-probe"}
    assert scaler.create_services(7) == [f"cniscope-scale-{i:05d}" for i in range(7)]
    posts = [r for r in api.requests if r.method == "POST"]
    assert len(posts) == 7                      # the first five were not created twice
    assert scaler.delete_all() == 7
    assert list(api.services["cniscope-probe"]) == ["keep-me"]
    assert scaler.delete_all() == 0


def test_service_creation_forbidden(api: FakeApiServer, tmp_path: Path) -> None:
    api.forbidden.add("/api/v1/namespaces/kube-system/services")
    scaler = ServiceScaler("kube-system", kubeapi.api_client(env_for(api, tmp_path)))
    with pytest.raises(Unavailable, match="403"):
        scaler.create_services(1)


def test_cli_prints_the_fingerprint(api: FakeApiServer, tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    api.load("scenario_c.json")
    env = {**os.environ, **env_for(api, tmp_path)}
    r = subprocess.run([sys.executable, "-m", "cniscope.cli", "k8s", "fingerprint", "-o", "json"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["scenario"], out["kube_proxy"], out["routing"]) == ("C", "ebpf", "tunnel-vxlan")
    api.forbidden.add(CM + "cilium-config")
    r = subprocess.run([sys.executable, "-m", "cniscope.cli", "k8s", "fingerprint"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode != 0
    assert "403" in r.stderr


def test_an_expired_watch_lists_again_and_watches_on(api: FakeApiServer, tmp_path: Path) -> None:
    """410 Gone: the resourceVersion the watch resumed from has expired; the pods are listed again and a
    new watch, from the list's version, sees the pod start."""
    from tests.k8s.apiserver import status

    api.pods.append(probe_pod("Pending"))
    api.events.put({"type": "ERROR", "object": status(410, "Expired", "too old resource version: 1 (1000)")})
    api.events.put({"type": "MODIFIED", "object": probe_pod("Running", "10.0.3.7")})
    pod = view(api, tmp_path).probe_pod(NODE, "cniscope-probe", "app.kubernetes.io/name=cniscope-probe", timeout=10)
    assert pod is not None
    assert (pod.phase, pod.ip) == ("Running", "10.0.3.7")
    calls = ["watch" if r.query.get("watch") else "list" for r in api.requests if r.path.endswith("/pods")]
    assert calls == ["list", "watch", "list", "watch"]


def test_scaler_without_an_api_server_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    from cniscope.core.config import CollectorConfig

    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(Unavailable, match="no Kubernetes configuration"):
        ServiceScaler.from_config(CollectorConfig())


def test_reconcile_changes_nothing_while_the_same_pod_runs(api: FakeApiServer, tmp_path: Path) -> None:
    paths = fake_proc(tmp_path / "proc")
    (tmp_path / "proc" / "4100" / "ns").mkdir()
    (tmp_path / "proc" / "4100" / "ns" / "net").write_text("")
    api.pods.append(probe_pod("Running", "192.168.40.7"))
    v = view(api, tmp_path)
    cfg = AgentConfig(node=NODE)
    assert cluster_api.reconcile_probe_pod(cfg, paths, v, "") is not None          # first sight
    assert cluster_api.reconcile_probe_pod(cfg, paths, v, POD_UID) is None          # same pod: no reconnect
    api.pods[:] = [{**probe_pod("Running", "192.168.40.9")}]
    moved = cluster_api.reconcile_probe_pod(cfg, paths, v, POD_UID)
    assert moved is not None
    assert cfg.pod_ip == "192.168.40.9"
    api.pods.clear()
    assert cluster_api.reconcile_probe_pod(cfg, paths, v, POD_UID) is None          # none running: keep the last
    assert cfg.pod_ip == "192.168.40.9"


def test_scale_to_an_exact_count_and_wait_for_endpoints(api: FakeApiServer, tmp_path: Path) -> None:
    scaler = ServiceScaler("cniscope-probe", kubeapi.api_client(env_for(api, tmp_path)))
    assert len(scaler.scale_to(6)) == 6
    names = scaler.scale_to(2)
    assert scaler.list_names() == names == ["cniscope-scale-00000", "cniscope-scale-00001"]
    ip = scaler.cluster_ip(names[-1])
    assert ip.startswith("198.18.64.")

    added = threading.Event()

    def slice_later() -> None:    # the EndpointSlice controller fills the slice a moment later
        time.sleep(0.4)
        added.set()               # just before the slice exists: a wait that returned earlier did not wait
        api.endpointslices.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": f"{names[-1]}-x1", "namespace": "cniscope-probe",
                         "labels": {"kubernetes.io/service-name": names[-1]}},
            "endpoints": [{"addresses": ["192.168.40.7"], "conditions": {"ready": True}, "nodeName": NODE}],
            "ports": [{"name": "accept", "port": 7421, "protocol": "TCP"}]})

    threading.Thread(target=slice_later, daemon=True).start()
    waited = scaler.wait_ready(names[-1], timeout=5, poll=0.1)
    # it returned because the slice came, not before (its own clock started after the thread's)
    assert added.is_set()
    assert 0 < waited < 5
    with pytest.raises(Unavailable, match="no ready endpoint"):
        scaler.wait_ready(names[0], timeout=0.3, poll=0.1)
    with pytest.raises(Unavailable, match="does not exist"):
        scaler.cluster_ip("nope")
