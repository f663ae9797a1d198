"""Service scaling over both datapaths on a real 3-node lab: ``bench services --backend
iptables-nft,ebpf`` gives a row for every N and backend with the in-kernel reading of every
repetition, kube-proxy's NAT rules grow 8 + 10·N while the socket LB's service map holds exactly
4·N entries, and connect setup grows with N through iptables but not through the socket LB. A lab up
on the eBPF datapath (``--datapath ebpf``) serves its kube-dns Service through it, the agents' census
reports the service map, ``auto`` picks ``ebpf``, and ``lab down`` leaves nothing behind."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from probe_helpers import running_cluster  # type: ignore[import-not-found]

from cniscope.api.v1 import common_pb2
from cniscope.client.grpc_collector import CollectorClient, list_nodes
from cniscope.collector.runs.kernel_setup import COUNT
from cniscope.collector.runs.run_fingerprint import derive
from cniscope.lab.lab import Lab, LabSpec
from cniscope.lab.lab_services import count_rules
from cniscope.lab.socklb.ebpf_services import service_entries
from cniscope.lab.socklb.sock_lb import SockLB
from tests.waiting import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.bpf, pytest.mark.bcc, pytest.mark.slow]
CNISCOPE = [sys.executable, "-m", "cniscope.cli"]


def cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([*CNISCOPE, *args], capture_output=True, text=True, timeout=timeout, check=False)
    assert r.returncode == 0, f"{' '.join(args)} exited {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def has_figure(lab: Lab, node: str, key: str) -> bool:
    return any(n.node == node and key in n.figures for n in asyncio.run(list_nodes(lab.local_collector, deadline=5)))


def test_both_datapaths_every_row_every_kernel_reading(tmp_path: Path) -> None:
    with running_cluster(tmp_path, nodes=3, tracers=("tcpconnlat",), tracer_nodes=("node1",)) as lab:
        wait_for(lambda: has_figure(lab, "node1", COUNT), 90, "node1's tcpconnlat tracer to run")
        nodes = asyncio.run(list_nodes(lab.local_collector))
        assert derive({n.node: n for n in nodes})["environment"] == "lab: netns, iptables-nft"
        r = cli("bench", "services", "--collector", lab.local_collector, "--lab", lab.spec.name,
                "--counts", "4,1000", "--backend", "iptables-nft,ebpf", "--repeat", "3", "--connects", "100",
                "-o", "json")
        assert not SockLB(lab.spec.name).installed()   # the run installed the datapath and removed it
        for node in lab.nodes():
            assert count_rules(node.netns, "iptables-nft") == 0
    sc = json.loads(r.stdout)["scaling"]
    ipt = {row["services"]: row for row in sc["iptables-nft"]["rows"]}
    ebpf = {row["services"]: row for row in sc["ebpf"]["rows"]}
    assert sorted(ipt) == sorted(ebpf) == [4, 1000]
    for rows in (ipt, ebpf):
        for row in rows.values():
            assert "errors" not in row, row
            assert "kernel_note" not in row, row
            assert row["kernel_repeat"] == 3, row   # every repetition has its reading
            assert row["kernel_connects"] == row["kernel_probe_connects"] == 300, row
    assert [ipt[n]["rules"] for n in (4, 1000)] == [48, 10008]
    assert [ebpf[n]["rules"] for n in (4, 1000)] == [16, 4000]
    assert {row["signal"] for row in ebpf.values()} == {"BPF service map entries"}
    # the floors (best repetition's median) carry the signal on a busy 2-core host
    ipt_growth = ipt[1000]["setup_p50_min_us"] - ipt[4]["setup_p50_min_us"]
    ebpf_growth = ebpf[1000]["setup_p50_min_us"] - ebpf[4]["setup_p50_min_us"]
    assert ipt_growth > 10, ipt
    assert ebpf_growth < 0.5 * ipt_growth, (ebpf, ipt_growth)


def test_a_lab_on_the_ebpf_datapath(tmp_path: Path) -> None:
    from conftest import new_lab_name, wait_connected  # type: ignore[import-not-found]

    name = new_lab_name()
    lab = Lab(LabSpec(name=name, nodes=3))
    try:
        cli("lab", "up", "--name", name, "--datapath", "ebpf", "--wait", "60")
        nodes = wait_connected(lab, 3)
        assert SockLB(name).installed()
        for n in nodes:   # the census at connect: kube-dns UDP and TCP, a frontend and a slot each
            bpf = next(u.bpf for u in n.capabilities.units if u.name == "bpf")
            assert bpf.cilium["service"].entries >= 4
        assert derive({n.node: n for n in nodes})["environment"] == "lab: netns, ebpf socket-lb"
        r = cli("bench", "services", "--collector", lab.local_collector, "--counts", "104", "--repeat", "1",
                "--connects", "50", "-o", "json")
        rows = json.loads(r.stdout)["scaling"]
        assert list(rows) == ["ebpf"]                              # auto: the datapath the lab runs on
        # the run's Services, kube-dns, and the Services fronting the 3 probe pods (2 ports each)
        assert rows["ebpf"]["rows"][0]["rules"] == 4 * 104 + 4 + 3 * 2 * 2
        assert SockLB(name).installed()                            # the lab's datapath stays
        assert service_entries(SockLB(name)) == 4 + 3 * 2 * 2      # the run's gone, the lab's own kept

        async def dns() -> common_pb2.ProbeResult:
            async with CollectorClient(lab.local_collector) as c:
                req = common_pb2.ProbeRequest(kind="dns", source_node="node1", path="pod",
                                              params={"name": "node2.lab", "count": "5"})
                return [u.result async for u in c.run_probe(req) if u.WhichOneof("body") == "result"][0]

        res = asyncio.run(dns())
        assert res.ok, res.error
        assert res.figures["answered"] == 5
    finally:
        out = cli("lab", "down", "--name", name).stdout
    assert "removed" in out
    assert not SockLB(name).installed()
    time.sleep(0.5)
    progs = subprocess.run(["bpftool", "-j", "cgroup", "tree"], capture_output=True, text=True).stdout
    assert f"cniscope-lab/{name}" not in progs
