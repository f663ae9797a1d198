"""Kubernetes mode end to end on this machine: an agent whose only source of truth is the API (the
local stand-in) finds its node's probe pod, turns the pod UID into a real process's network
namespace through /proc/PID/cgroup, probes over the pod path through /proc/PID/ns/net, reports the
cluster fingerprint and answers its health checks.

The "probe pod" is a real process inside a lab pod namespace, put in a cgroup named the way the
kubelet's cgroupfs driver names pod cgroups (kubepods/besteffort/pod<UID>/<container>)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cniscope.api.v1 import cluster_pb2, cluster_pb2_grpc
from cniscope.core import grpcutil
from cniscope.lab.lab import Lab
from tests.caps import missing
from tests.conftest import wait_connected
from tests.k8s.apiserver import FakeApiServer, load_fixture

UID = "5f0c2a9e-8b7d-4c6e-a1f2-3b4c5d6e7f80"
NODE = "k8s-node1"


def cgroup_root() -> Path | None:
    for p in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup")):
        if (p / "cgroup.procs").exists() and os.access(p, os.W_OK):
            return p
    return None


class PodProcesses:
    """Real processes in lab pod namespaces, each in a pod-shaped cgroup; all removed afterwards."""

    def __init__(self, root: Path) -> None:
        self.top = root / f"cniscope-test-{os.getpid()}"
        self.root = root
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, pod_netns: str, uid: str) -> int:
        proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{pod_netns}", "sleep", "300"])
        self.procs.append(proc)
        leaf = self.top / "kubepods" / "besteffort" / f"pod{uid}" / "cri-containerd-0a1b2c"
        leaf.mkdir(parents=True)
        (leaf / "cgroup.procs").write_text(str(proc.pid))
        return proc.pid

    def stop(self, pid: int) -> None:
        for p in self.procs:
            if p.pid == pid:
                p.kill()
                p.wait()

    def cleanup(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        for d in sorted(self.top.rglob("*"), key=lambda x: len(x.parts), reverse=True):
            if d.is_dir() and not (d / "cgroup.procs").is_symlink():
                try:
                    d.rmdir()
                except OSError:
                    pass
        try:
            self.top.rmdir()
        except OSError:
            pass


@pytest.fixture
def pods() -> Iterator[PodProcesses]:
    root = cgroup_root()
    if root is None:
        missing("no writable cgroup hierarchy")
    pp = PodProcesses(root)
    try:
        yield pp
    finally:
        pp.cleanup()


def pod_object(uid: str, ip: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"cniscope-probe-{uid[:5]}", "namespace": "cniscope-probe", "uid": uid,
                         "labels": {"app.kubernetes.io/name": "cniscope-probe"}},
            "spec": {"nodeName": NODE}, "status": {"phase": "Running", "podIP": ip}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def node_state(address: str, name: str) -> Any:
    async with grpcutil.insecure_channel(address) as ch:
        return await cluster_pb2_grpc.ClusterStub(ch).GetNode(cluster_pb2.GetNodeRequest(node=name), timeout=5)


async def readiness(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        r = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="readiness"), timeout=3)
        return int(r.status)


def rtt_pod(lab: Lab) -> dict[str, Any]:
    r = subprocess.run([sys.executable, "-m", "cniscope.cli", "probe", "rtt", "--from", NODE, "--to", "node2",
                        "--path", "pod", "--count", "3", "--interval", "0.2",
                        "--collector", lab.local_collector, "-o", "json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    return out


@pytest.mark.netns
@pytest.mark.k8s
def test_agent_in_kubernetes_mode_finds_and_follows_its_probe_pod(lab_factory: Any, pods: PodProcesses,
                                                                   tmp_path: Path) -> None:
    lab: Lab = lab_factory(nodes=2, pods_per_node=2)
    node1 = lab.nodes()[0]
    first, second = node1.pods[0], node1.pods[1]
    old_pid = pods.start(first["netns"], UID)
    api = FakeApiServer().start()
    try:
        api.load("scenario_e.json")
        node_obj = load_fixture("node_m6i.json")["object"]
        api.objects[f"/api/v1/nodes/{NODE}"] = {**node_obj, "metadata": {**node_obj["metadata"], "name": NODE}}
        api.pods.append(pod_object(UID, first["ip"]))
        lab.start_cluster(db=tmp_path / "c.db", sample_interval=0.5)
        wait_connected(lab, 2)
        health = free_port()
        lab.spawn(f"agent:{NODE}", None, [
            sys.executable, "-m", "cniscope.cli", "agent", "--collector", lab.local_collector, "--node", NODE,
            "--sample-interval", "0.5"],
            env={"KUBECONFIG": str(api.kubeconfig(tmp_path / "kubeconfig")), "CNISCOPE_MESH_INTERVAL": "0",
                 "CNISCOPE_NODE": NODE, "CNISCOPE_PROBE_POD_RECHECK": "1",
                 "CNISCOPE_HEALTH_LISTEN": f"127.0.0.1:{health}", "CNISCOPE_TARGET_PORT": "7611",
                 "CNISCOPE_IPERF_PORT": "5611"})
        wait_connected(lab, 3, timeout=40)

        st = asyncio.run(node_state(lab.local_collector, NODE))
        assert st.pod_ip == first["ip"]
        units = {u.name: u for u in st.capabilities.units}
        cluster = units["cluster"].cluster
        assert cluster.fingerprint.scenario == "E", cluster
        assert cluster.node.instance_type == "m6i.xlarge"
        assert asyncio.run(readiness(health)) == health_pb2.HealthCheckResponse.SERVING
        assert any(r.query.get("fieldSelector") == [f"spec.nodeName={NODE}"] for r in api.requests)

        result = rtt_pod(lab)
        assert result["ok"] is True
        assert result["target_address"] == lab.nodes()[1].pod_ip
        assert 0 < result["figures"]["p50_us"] < 20_000

        # a rollout replaces the probe pod: new UID, new IP, new process; the agent follows it
        new_uid = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
        pods.start(second["netns"], new_uid)
        api.pods[:] = [pod_object(new_uid, second["ip"])]
        pods.stop(old_pid)
        deadline = time.monotonic() + 20
        while asyncio.run(node_state(lab.local_collector, NODE)).pod_ip != second["ip"]:
            assert time.monotonic() < deadline, "the agent did not follow the new probe pod"
            time.sleep(0.3)
        result = rtt_pod(lab)
        assert result["ok"] is True
    finally:
        api.stop()
