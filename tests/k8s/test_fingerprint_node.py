"""The fingerprint from what runs, not only from what is declared: Cilium found by its label in
another namespace, socket LB counted when kube-proxy replacement implies it, EKS Auto Mode recognised
by its nodes, and — on the node — cilium-agent's effective options (its config directory, laid out
the way the kubelet mounts a ConfigMap, read through /proc/PID/root, plus its flags) and
kube-proxy's mode from its /proxyMode endpoint, its flags or its config file. The processes are real
(renamed sh / python3 with the real command-line shapes); each fact says where it came from."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cniscope.agent import cluster_api, node_dataplane
from cniscope.core.fingerprint import ClusterObjects, derive, with_node
from cniscope.core.hostpaths import HostPaths
from tests.k8s.apiserver import FakeApiServer, load_fixture

pytestmark = pytest.mark.k8s

KS_CM = "/api/v1/namespaces/kube-system/configmaps/"
KS_DS = "/apis/apps/v1/namespaces/kube-system/daemonsets/"


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    srv = FakeApiServer().start()
    yield srv
    srv.stop()


def view(api: FakeApiServer, tmp_path: Path) -> cluster_api.ClusterView:
    v = cluster_api.ClusterView.connect("on", {"KUBECONFIG": str(api.kubeconfig(tmp_path / "kc"))})
    assert v is not None
    return v


def move_cilium(api: FakeApiServer, ns: str) -> None:
    for kind, base in (("configmaps", KS_CM), ("daemonsets", KS_DS)):
        name = "cilium-config" if kind == "configmaps" else "cilium"
        obj = api.objects.pop(base + name)
        obj["metadata"]["namespace"] = ns
        prefix = "/api/v1" if kind == "configmaps" else "/apis/apps/v1"
        api.objects[f"{prefix}/namespaces/{ns}/{kind}/{name}"] = obj


def test_cilium_installed_in_its_own_namespace_is_found_by_label(api: FakeApiServer, tmp_path: Path) -> None:
    api.load("scenario_e.json")
    move_cilium(api, "cilium")
    fp = view(api, tmp_path).fingerprint()
    assert (fp.cni, fp.cni_version, fp.scenario()) == ("cilium", "1.16.5", "E")
    src = dict(fp.sources)
    assert src["cni"] == "API: DaemonSet cilium/cilium"
    assert src["routing"] == "API: ConfigMap cilium/cilium-config"
    assert "/api/v1/namespaces/cilium/configmaps/cilium-config" in {r.path for r in api.requests}
    listed = [r for r in api.requests if r.path == "/apis/apps/v1/daemonsets"]
    assert listed[0].query["labelSelector"] == ["k8s-app=cilium"]


def test_socket_lb_implied_by_kube_proxy_replacement_still_reads_as_e() -> None:
    o = copy.deepcopy(load_fixture("scenario_e.json")["objects"])
    del o[KS_CM + "cilium-config"]["data"]["bpf-lb-sock"]           # socketLB.enabled left unset
    fp = derive(ClusterObjects(cilium_config=o[KS_CM + "cilium-config"], cilium=o[KS_DS + "cilium"]))
    assert "socket-lb" in fp.tuning
    assert fp.scenario() == "E"
    assert dict(fp.sources)["tuning.socket-lb"].startswith("default: implied by kube-proxy-replacement")


def test_eks_auto_mode_is_recognised_by_its_nodes(api: FakeApiServer, tmp_path: Path) -> None:
    node = load_fixture("node_m6i.json")["object"]
    node["metadata"]["labels"]["eks.amazonaws.com/compute-type"] = "auto"
    node["status"]["nodeInfo"]["osImage"] = "Bottlerocket (EKS Auto, Standard) 2025.1.7 (aws-k8s-1.31)"
    api.objects["/api/v1/nodes"] = {"kind": "NodeList", "apiVersion": "v1", "metadata": {}, "items": [node]}
    fp = view(api, tmp_path).fingerprint()                          # no aws-node, no kube-proxy DaemonSet
    assert (fp.cni, fp.routing, fp.kube_proxy) == ("aws-vpc-cni", "native", "unknown")
    assert any("EKS Auto Mode" in n for n in fp.notes)
    assert "compute-type=auto" in dict(fp.sources)["cni"]
    auto = [r for r in api.requests if r.path == "/api/v1/nodes"]
    assert auto[0].query["labelSelector"] == ["eks.amazonaws.com/compute-type=auto"]


# ---- the node's processes ------------------------------------------------------------------------
def configmap_volume(root: Path, data: dict[str, str]) -> Path:
    """A directory as the kubelet's atomic writer mounts a ConfigMap: a timestamped directory with the
    files, ``..data`` pointing at it, and one symlink per key through ``..data``."""
    stamp = root / "..2025_01_20_04_12_33.123456789"
    stamp.mkdir(parents=True)
    for k, v in data.items():
        (stamp / k).write_text(v)
    (root / "..data").symlink_to(stamp.name)
    for k in data:
        (root / k).symlink_to(f"..data/{k}")
    return root


def start_named(tmp_path: Path, name: str, target: str, args: list[str]) -> subprocess.Popen[bytes]:
    exe = tmp_path / name
    exe.symlink_to(target)
    proc = subprocess.Popen([str(exe), *args])
    deadline = time.monotonic() + 5
    # exec sets the new comm before the new command line is in place: wait for both
    while (Path(f"/proc/{proc.pid}/comm").read_text().strip() != name[:15]
           or args[-1].encode() not in Path(f"/proc/{proc.pid}/cmdline").read_bytes()):
        assert time.monotonic() < deadline, "the renamed process did not start"
        time.sleep(0.02)
    return proc


@pytest.fixture
def processes() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(tmp_path: Path, name: str, target: str, args: list[str]) -> subprocess.Popen[bytes]:
        p = start_named(tmp_path, name, target, args)
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()
        p.wait()


def test_the_node_runs_what_cilium_agent_was_started_with(api: FakeApiServer, tmp_path: Path,
                                                          processes: Callable[..., Any]) -> None:
    api.load("scenario_b.json")                                     # declared: tunnel, kube-proxy in iptables mode
    running = load_fixture("scenario_d.json")["objects"][KS_CM + "cilium-config"]["data"]   # what the node runs
    cdir = configmap_volume(tmp_path / "config-map", running)
    proc = processes(tmp_path, "cilium-agent", "/bin/sh",
                     ["-c", "sleep 30; :", "cilium-agent", f"--config-dir={cdir}", "--enable-bandwidth-manager=true"])
    assert proc.pid in node_dataplane.pids(HostPaths(), "cilium-agent")
    v = view(api, tmp_path)
    fp = with_node(v.objects(), node_dataplane.read(HostPaths(), "127.0.0.1:9", cilium_pid=proc.pid))
    assert (fp.kube_proxy, fp.routing, fp.ipam) == ("ebpf", "native", "eni")
    assert "bandwidth-manager" in fp.tuning
    assert fp.source == "kubernetes+node"
    src = dict(fp.sources)
    assert src["routing"] == (f"process cilium-agent (pid {proc.pid}): --config-dir {cdir} "
                              "+ flags enable-bandwidth-manager")
    assert src["cni"] == "API: DaemonSet kube-system/cilium"
    assert (fp.cni_version, derive(v.objects()).routing) == ("1.16.5", "tunnel-vxlan")


PROXY_MODE_SERVER = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"nftables" if self.path == "/proxyMode" else b"not found"
        self.send_response(200 if self.path == "/proxyMode" else 404)
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
open(sys.argv[1], "w").write(str(s.server_address[1]))
s.serve_forever()
"""


def test_kube_proxy_mode_from_its_proxy_mode_endpoint(api: FakeApiServer, tmp_path: Path,
                                                      processes: Callable[..., Any]) -> None:
    api.load("scenario_a.json")                                     # kube-proxy-config declares iptables
    script, port_file = tmp_path / "kp.py", tmp_path / "port"
    script.write_text(PROXY_MODE_SERVER)
    kp = processes(tmp_path, "kube-proxy", sys.executable, [str(script), str(port_file)])
    deadline = time.monotonic() + 10
    while not port_file.exists() or not port_file.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    metrics = f"127.0.0.1:{port_file.read_text()}"
    assert kp.pid in node_dataplane.pids(HostPaths(), "kube-proxy")
    mode, where = node_dataplane.kube_proxy(HostPaths(), metrics, kp.pid)
    assert mode == "nftables"
    assert where.endswith(f"/proxyMode on {metrics}")


def test_kube_proxy_mode_from_its_flags_and_its_config_file(tmp_path: Path, processes: Callable[..., Any]) -> None:
    conf = tmp_path / "config.conf"
    conf.write_text("apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\n")
    p = processes(tmp_path, "kube-proxy", "/bin/sh",
                  ["-c", "sleep 30; :", "kube-proxy", f"--config={conf}", "--hostname-override=n1"])
    mode, where = node_dataplane.kube_proxy(HostPaths(), "127.0.0.1:9", p.pid)   # nothing answers /proxyMode
    assert (mode, where) == ("ipvs", f"process kube-proxy (pid {p.pid}): --config {conf}")
    p.kill()
    p.wait()
    (tmp_path / "kube-proxy").unlink()
    p2 = processes(tmp_path, "kube-proxy", "/bin/sh", ["-c", "sleep 30; :", "kube-proxy", "--proxy-mode", "nftables"])
    assert node_dataplane.kube_proxy(HostPaths(), "127.0.0.1:9", p2.pid) == (
        "nftables", f"process kube-proxy (pid {p2.pid}): --proxy-mode")


def test_flags_parse_like_the_agents_do() -> None:
    assert node_dataplane.parse_flags(["cilium-agent", "--config-dir=/tmp/cilium/config-map", "--debug",
                                       "--kube-proxy-replacement", "true", "-v"]) == {
        "config-dir": "/tmp/cilium/config-map", "debug": "true", "kube-proxy-replacement": "true"}
    assert node_dataplane.cilium_options({"routing-mode": "tunnel", "ipam": "eni"},
                                         {"routing-mode": "native", "config-dir": "/x"}) == {
        "routing-mode": "native", "ipam": "eni"}
    assert os.path.basename(node_dataplane.CILIUM_CONFIG_DIR) == "config-map"
