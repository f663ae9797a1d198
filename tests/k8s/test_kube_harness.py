"""The lab's real Kubernetes: etcd, kube-apiserver, kube-controller-manager and kube-proxy from the
project's Go harness (core/kube-harness), started inside a lab's namespaces by
``cniscope.lab.kube.control_plane.KubeLab``, with the lab's kubelet stand-in posting Nodes and pod status.

Needs root, network namespaces and the harness binary: ``$CNISCOPE_KUBE_HARNESS``, or a Go toolchain
to build it (``make kube-harness``; ``make test`` builds it first). Without either the tests skip
locally and fail under CI=true."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cniscope.lab import netns, procs
from cniscope.lab.kube import harness
from cniscope.lab.kube.apiclient import socket_in_netns
from cniscope.lab.kube.component_flags import PROXY_METRICS_PORT
from cniscope.lab.kube.control_plane import KubeLab
from cniscope.lab.lab import Lab, LabSpec
from tests.conftest import new_lab_name
from tests.k8s import kube_lab_kit as kit
from tests.k8s.kube_lab_kit import wait_for

pytestmark = [pytest.mark.k8s, pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(1800)]  # a first harness build takes ~11 min

T = TypeVar("T")
SYNC_COUNT = "kubeproxy_sync_proxy_rules_duration_seconds_count"


@pytest.fixture(scope="module")
def harness_binary() -> Path:
    return kit.harness_binary()


@pytest.fixture(scope="module", params=["iptables", "nftables"])
def klab(request: pytest.FixtureRequest, harness_binary: Path,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeLab]:
    """A 2-node lab with the control plane and kube-proxy in ``request.param`` mode. Afterwards
    ``lab down`` must leave none of its processes and namespaces behind."""
    lab = Lab(LabSpec(name=new_lab_name(), nodes=2, pods_per_node=2),
              state_root=tmp_path_factory.mktemp("kubelabs"))
    recs: list[procs.ProcRecord] = []
    try:
        lab.up()
        k = KubeLab(lab)
        k.up(binary=harness_binary, proxy_mode=request.param)
        recs = [r for r in (lab.record(p["role"]) for p in lab.status()["processes"]) if r is not None]
        yield k
    finally:
        lab.down()
    assert [r.role for r in recs if r.role.startswith("kube:")], "no Kubernetes process was recorded"
    assert not [r.role for r in recs if procs.alive(r)], "processes left running after lab down"
    assert not [n for n in lab.namespaces() if netns.exists(n)], "namespaces left after lab down"


def metrics(ns: str, ip: str, port: int = PROXY_METRICS_PORT) -> str:
    sock = socket_in_netns(netns.NETNS_DIR / ns, (ip, port), timeout=5)
    conn = http.client.HTTPConnection(ip, port, timeout=5)
    conn.sock = sock
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def sync_count(ns: str, ip: str) -> float:
    m = re.search(rf"^{SYNC_COUNT} (\S+)$", metrics(ns, ip), re.M)
    assert m, f"{SYNC_COUNT} missing from kube-proxy's /metrics on {ip}"
    return float(m.group(1))


def test_api_server_answers_readyz_through_kubectl(klab: KubeLab) -> None:
    assert klab.kubectl("get", "--raw", "/readyz").strip() == "ok"
    version = json.loads(klab.kubectl("version", "-o", "json"))
    assert version["serverVersion"]["gitVersion"] == harness.kubernetes_version()
    st = klab.status()
    assert st is not None
    assert st["api_address"] == "198.18.0.4:6443"
    assert all(st["processes"].values()), st["processes"]
    dns = json.loads(klab.kubectl("get", "service", "-n", "kube-system", "kube-dns", "-o", "json"))
    assert dns["spec"]["clusterIP"] == "198.18.64.2"   # the lab DNS address, reserved
    # it listens inside the lab only: nothing of it in the host namespace
    host = subprocess.run(["ss", "-Hntl"], capture_output=True, text=True, check=True).stdout
    assert "198.18.0.4:6443" not in host


def test_lab_nodes_are_ready_with_lab_addresses(klab: KubeLab) -> None:
    api = klab.client()

    def ready_nodes() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = api.get("/api/v1/nodes")["items"]
        ok = [n for n in items if any(c["type"] == "Ready" and c["status"] == "True"
                                      for c in n["status"].get("conditions", []))]
        return items if len(ok) == len(klab.lab.nodes()) else None

    try:
        nodes = {n["metadata"]["name"]: n for n in wait_for("every lab node Ready", ready_nodes)}
        for ln in klab.lab.nodes():
            n = nodes[ln.name]
            assert {"type": "InternalIP", "address": ln.host_ip} in n["status"]["addresses"]
            assert n["spec"]["podCIDR"] == f"198.19.{ln.index}.0/24"
            info = n["status"]["nodeInfo"]
            assert info["containerRuntimeVersion"].startswith("lab://")
            assert info["kernelVersion"] == os.uname().release
            lease = api.get(f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{ln.name}")
            assert lease["spec"]["holderIdentity"] == ln.name
        # the node controller lifts its not-ready taint once the node reports Ready
        wait_for("no node.kubernetes.io/not-ready taint", lambda: all(
            not any(t["key"] == "node.kubernetes.io/not-ready" for t in n["spec"].get("taints", []))
            for n in api.get("/api/v1/nodes")["items"]))
    finally:
        api.close()


def test_service_rules_appear_in_every_node_and_sync_metric_moves(klab: KubeLab) -> None:
    api = klab.client()
    nodes = klab.lab.nodes()
    try:
        before: dict[str, float] = {}
        for n in nodes:
            def count(n: Any = n) -> float:
                return sync_count(n.netns, n.host_ip)

            before[n.name] = wait_for(f"kube-proxy metrics on {n.name}", count)
        # a real pod bound to node1: the kubelet stand-in marks it Running/Ready with node1's pod IP,
        # the endpointslice controller writes its slice, kube-proxy programs every node
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "web-0", "namespace": "default", "labels": {"app": "web"}},
               "spec": {"nodeName": nodes[0].name, "automountServiceAccountToken": False,
                        "containers": [{"name": "web", "image": "lab/web",
                                        "ports": [{"containerPort": 8080}]}]}}
        # the default ServiceAccount appears when the controller manager's serviceaccount controller ran
        wait_for("pod web-0 created", lambda: api.create("/api/v1/namespaces/default/pods", pod))
        def pod_with_ip() -> dict[str, Any] | None:
            p: dict[str, Any] = api.get("/api/v1/namespaces/default/pods/web-0")
            return p if p["status"].get("podIP") else None

        running = wait_for("pod web-0 Running with a lab pod address", pod_with_ip)
        assert running["status"]["phase"] == "Running"
        assert running["status"]["podIP"] == nodes[0].pods[0]["ip"]
        svc = api.create("/api/v1/namespaces/default/services", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}})
        cluster_ip = svc["spec"]["clusterIP"]
        assert cluster_ip.startswith("198.18.")

        def slice_ready() -> bool:
            items = api.get("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
                            query={"labelSelector": "kubernetes.io/service-name=web"})["items"]
            return any(e["addresses"] == [nodes[0].pods[0]["ip"]] and e["conditions"].get("ready")
                       for s in items for e in s.get("endpoints") or [])

        wait_for("EndpointSlice of web with the pod's address", slice_ready)
        endpoint = f"{nodes[0].pods[0]['ip']}:8080"
        st = klab.status()
        assert st is not None
        mode = st["proxy_mode"]
        for n in nodes:
            def iptables_rules(n: Any = n) -> str | None:
                out = netns.exec_in(n.netns, ["iptables-save", "-t", "nat"])
                svc_lines = [ln for ln in out.splitlines() if "default/web:http" in ln]
                has = (any(f"-d {cluster_ip}/32" in ln and "-j KUBE-SVC-" in ln for ln in svc_lines)
                       and any("DNAT" in ln and endpoint in ln for ln in svc_lines))
                return out if has else None

            def nft_rules(n: Any = n) -> str | None:
                out = netns.exec_in(n.netns, ["nft", "list", "table", "ip", "kube-proxy"])
                has = (re.search(rf"{re.escape(cluster_ip)} \. tcp \. 80 : goto service-\S+-default/web/tcp/http",
                                 out) is not None and f"dnat to {endpoint}" in out)
                return out if has else None

            if mode == "iptables":
                wait_for(f"KUBE-SVC chain for default/web in {n.netns}", iptables_rules)
            else:
                wait_for(f"kube-proxy nftables service chain for default/web in {n.netns}", nft_rules)

            def moved(n: Any = n) -> bool:
                return sync_count(n.netns, n.host_ip) > before[n.name]

            wait_for(f"kube-proxy sync count moves on {n.name}", moved)
        # and the rules carry traffic: node2's pod reaches node1's pod through the ClusterIP
        server = subprocess.Popen(
            netns.nsenter_argv(nodes[0].pods[0]["netns"],
                               [sys.executable, "-m", "http.server", "8080", "--bind", nodes[0].pods[0]["ip"]]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            status = wait_for("HTTP through the ClusterIP from node2's pod",
                              lambda: http_get(nodes[1].pods[0]["netns"], cluster_ip, 80))
            assert status == 200
        finally:
            server.terminate()
            server.wait(5)
    finally:
        api.close()


def http_get(ns: str, ip: str, port: int) -> int:
    sock = socket_in_netns(netns.NETNS_DIR / ns, (ip, port), timeout=3)
    conn = http.client.HTTPConnection(ip, port, timeout=3)
    conn.sock = sock
    try:
        conn.request("GET", "/")
        return conn.getresponse().status
    finally:
        conn.close()


def test_daemonset_pods_are_scheduled_and_run_on_every_lab_node(klab: KubeLab) -> None:
    """The DaemonSet controller creates a pod per node, kube-scheduler binds it, the kubelet stand-in
    reports it Running/Ready with one of that node's lab pod addresses."""
    api = klab.client()
    try:
        api.create("/apis/apps/v1/namespaces/default/daemonsets", {
            "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "probe", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "probe"}},
                     "template": {"metadata": {"labels": {"app": "probe"}},
                                  "spec": {"automountServiceAccountToken": False,
                                           "containers": [{"name": "probe", "image": "lab/probe"}]}}}})
        nodes = {n.name: n for n in klab.lab.nodes()}

        def running() -> list[dict[str, Any]] | None:
            pods: list[dict[str, Any]] = api.get("/api/v1/namespaces/default/pods",
                                                 query={"labelSelector": "app=probe"})["items"]
            ok = [p for p in pods if p["status"].get("phase") == "Running" and p["status"].get("podIP")]
            return ok if len(ok) == len(nodes) else None

        pods = wait_for("a Running probe pod on every node", running)
        assert sorted(p["spec"]["nodeName"] for p in pods) == sorted(nodes)
        for p in pods:
            node = nodes[p["spec"]["nodeName"]]
            assert p["status"]["hostIP"] == node.host_ip
            assert p["status"]["podIP"] in [lp["ip"] for lp in node.pods]
        ds = wait_for("DaemonSet status counts every pod ready", lambda: (
            d if (d := api.get("/apis/apps/v1/namespaces/default/daemonsets/probe"))["status"].get("numberReady")
            == len(nodes) else None))
        assert ds["status"]["desiredNumberScheduled"] == len(nodes)
    finally:
        api.close()
