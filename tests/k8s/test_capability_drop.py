"""The agent with one capability dropped at a time (capsh, as the DaemonSet's list would be if an
operator removed one): it reports exactly the features that capability gates as
"unavailable: missing CAP_X", keeps every other unit and the stream running, and refuses a probe
that needs the missing capability before any packet leaves."""

from __future__ import annotations

import asyncio
import json
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cniscope.agent import caps
from cniscope.api.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2
from cniscope.core import grpcutil
from cniscope.lab import netns
from cniscope.lab.lab import Lab
from tests.conftest import wait_connected

DROPPED = ["BPF", "PERFMON", "NET_ADMIN", "NET_RAW", "SYS_ADMIN", "SYS_PTRACE", "SYS_RESOURCE"]
GATED_UNITS = {"bpf", "iptables"}


async def get_nodes(address: str, names: list[str]) -> dict[str, Any]:
    async with grpcutil.insecure_channel(address) as ch:
        stub = cluster_pb2_grpc.ClusterStub(ch)
        return {n: await stub.GetNode(cluster_pb2.GetNodeRequest(node=n), timeout=5) for n in names}


def probe(lab: Lab, src: str, dst: str, path: str) -> tuple[int, str]:
    r = subprocess.run([sys.executable, "-m", "cniscope.cli", "probe", "rtt", "--from", src, "--to", dst,
                        "--path", path, "--count", "3", "--interval", "0.2",
                        "--collector", lab.local_collector, "-o", "json"],
                       capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr


@pytest.mark.netns
@pytest.mark.slow
def test_each_dropped_capability_disables_exactly_its_features(lab_factory: Any, tmp_path: Path) -> None:
    lab: Lab = lab_factory(nodes=1)
    lab.start_cluster(db=tmp_path / "c.db", sample_interval=0.5)
    wait_connected(lab, 1)
    node = lab.nodes()[0]
    names = []
    for i, cap in enumerate(DROPPED):
        name = f"drop-{cap.lower().replace('_', '')}"
        names.append(name)
        argv = [sys.executable, "-m", "cniscope.cli", "agent", "--collector", lab.collector_address,
                "--node", name, "--host-ip", node.host_ip, "--pod-ip", node.pod_ip,
                "--pod-netns", str(netns.NETNS_DIR / node.pod_netns), "--sample-interval", "0.5"]
        lab.spawn(f"agent:{name}", node.netns,
                  ["capsh", f"--drop=cap_{cap.lower()}", "--", "-c", "exec " + shlex.join(argv)],
                  env={"CNISCOPE_TARGET_PORT": str(7511 + 2 * i), "CNISCOPE_IPERF_PORT": str(5301 + i),
                       "CNISCOPE_MESH_INTERVAL": "0"})
    wait_connected(lab, 1 + len(DROPPED), timeout=60)
    states = asyncio.run(get_nodes(lab.local_collector, names))

    full = caps.effective()
    release = platform.release()
    for cap, name in zip(DROPPED, names, strict=True):
        st = states[name]
        assert st.status == cluster_pb2.NODE_STATUS_CONNECTED, name
        report = st.capabilities
        have = full - {cap}
        expected = {f for f in caps.FEATURE_CAPS if caps.feature_missing(f, have, release)}
        not_ready = {i.name[4:]: i.reason for i in report.items
                     if i.name.startswith("cap_") and i.state == common_pb2.READINESS_NOT_READY}
        assert set(not_ready) == expected, f"{cap}: {not_ready}"
        for reason in not_ready.values():
            assert reason == f"unavailable: missing CAP_{cap}"
        units = {u.name: u for u in report.units}
        assert "privileges" in units
        for uname, u in units.items():
            assert u.ok, f"{cap}: unit {uname} failed: {u.error}"
            if uname in GATED_UNITS and uname in expected:
                assert (u.available, u.error) == (False, f"unavailable: missing CAP_{cap}")
            elif uname in GATED_UNITS:
                assert u.available, f"{cap}: {uname} {u.error}"
        assert st.figures, f"{name} sends no samples"

    # SYS_ADMIN gates the eBPF census and the pod paths; the host path keeps working.
    assert "bpf" in {f for f in caps.FEATURE_CAPS if caps.feature_missing(f, full - {"SYS_ADMIN"}, release)}
    rc, out = probe(lab, "drop-sysadmin", "node1", "pod")
    assert rc != 0
    assert "missing CAP_SYS_ADMIN" in out
    rc, out = probe(lab, "drop-sysadmin", "node1", "host")
    assert rc == 0, out
    assert json.loads(out)["ok"] is True
    # without NET_RAW, ping needs ICMP datagram sockets; the lab's namespaces do not allow them
    rc, out = probe(lab, "drop-netraw", "node1", "host")
    assert rc != 0
    assert "missing CAP_NET_RAW" in out
