"""The suite's service path on a real 2-node lab, on both Service datapaths, in one store: ``lab up``
fronts each node's probe pod with a ClusterIP Service; ``bench run --label iptables`` reaches node2's
targets through that ClusterIP by kube-proxy-style NAT rules, ``lab datapath ebpf`` moves the Services
to the socket LB (no iptables or nft NAT rule left), ``bench run --label ebpf`` reaches the same
targets through it; each run's fingerprint names its datapath, and ``bench compare`` holds both runs'
rows. A ``bench services`` run in between leaves the fronts in place, and ``auto`` follows the lab's
datapath. Ground truth is node2's pod's own count of SYNs arriving at its probe ports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from cniscope.lab import netns
from cniscope.lab.lab import Lab, LabSpec
from cniscope.lab.lab_services import count_rules
from cniscope.lab.socklb.sock_lb import SockLB

pytestmark = [pytest.mark.netns, pytest.mark.bpf, pytest.mark.bcc, pytest.mark.slow]
CNISCOPE = [sys.executable, "-m", "cniscope.cli"]
ITEMS = "rtt,svc_connect,svc_http"
CONNECTS = 50        # the quick suite's svc_connect count
COUNTER_TABLE = "cnstestsyn"


def cli(lab: Lab, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CNISCOPE_COLLECTOR": lab.local_collector}
    r = subprocess.run([*CNISCOPE, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False)
    assert r.returncode == 0, f"{' '.join(args)} exited {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def count_syns(pod_ns: str) -> None:
    """Count, in the target pod itself, the connection attempts that arrive at its probe ports."""
    t = f"ip {COUNTER_TABLE}"
    rules = (f"add table {t}\nadd counter {t} connect\nadd counter {t} http\n"
             f"add chain {t} in {{ type filter hook input priority 0 ; }}\n"
             f"add rule {t} in tcp dport 7411 tcp flags & (syn | ack) == syn counter name connect\n"
             f"add rule {t} in tcp dport 7412 tcp flags & (syn | ack) == syn counter name http\n")
    netns.run(netns.nsenter_argv(pod_ns, ["nft", "-f", "-"]), input=rules)


def syns(pod_ns: str) -> tuple[int, int]:
    """SYNs at (connect port, HTTP port) since the last call, which resets them."""
    out = json.loads(netns.run(netns.nsenter_argv(pod_ns, ["nft", "-j", "reset", "counters", "table", "ip",
                                                          COUNTER_TABLE])))
    got = {o["counter"]["name"]: int(o["counter"]["packets"]) for o in out["nftables"] if "counter" in o}
    return got["connect"], got["http"]


def scaling(lab: Lab, *args: str) -> dict[str, Any]:
    out = cli(lab, "bench", "services", "--counts", "4", "--repeat", "1", "--connects", "20", "-o", "json", *args)
    rows: dict[str, Any] = json.loads(out.stdout)["scaling"]
    return rows


def bench_run(lab: Lab, label: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(cli(lab, "bench", "run", "--label", label, "--suite", "quick", "--repeat", "1",
                                         "--only", ITEMS, "-o", "json").stdout)
    assert out["status"] == "RUN_STATUS_DONE", out
    assert not out["skipped"], out["skipped"]
    return out


def test_service_path_on_iptables_then_ebpf_compared() -> None:
    from conftest import new_lab_name, wait_connected  # type: ignore[import-not-found]

    name = new_lab_name()
    lab = Lab(LabSpec(name=name, nodes=2, pods_per_node=2))   # 4 pods: a scaling run plans 3 endpoints
    try:
        cli(lab, "lab", "up", "--name", name, "--nodes", "2", "--pods-per-node", "2", "--wait", "60")
        wait_connected(lab, 2)
        node1, node2 = lab.nodes()
        front = lab.services()["fronts"]["node2"]
        assert front == "198.18.127.2"
        for node in (node1, node2):   # kube-proxy's rules for both fronts, in every node namespace
            nat = netns.run(netns.nsenter_argv(node.netns, ["iptables-nft-save", "-t", "nat"]))
            assert f"-d {front}/32" in nat
            assert "--dport 7411" in nat
            assert "--dport 7412" in nat
        count_syns(node2.pod_netns)
        syns(node2.pod_netns)

        ipt = bench_run(lab, "iptables")
        connect_syns, http_syns = syns(node2.pod_netns)
        assert connect_syns >= CONNECTS        # every connect reached node2's pod (a retransmit may add one)
        assert http_syns >= 100                # quick svc_http: 100 requests, each on a new connection

        # a socket-LB scaling run on this kube-proxy lab drops kube-proxy's tables while it runs;
        # the fronts' rules are back after it
        scaling(lab, "--backend", "ebpf")
        assert not SockLB(name).installed()
        assert f"-d {front}/32" in netns.run(netns.nsenter_argv(node1.netns, ["iptables-nft-save", "-t", "nat"]))

        cli(lab, "lab", "datapath", "--name", name, "ebpf")
        assert SockLB(name).installed()
        for node in (node1, node2):   # no NAT rule anywhere on the path: the socket LB alone translates
            assert count_rules(node.netns, "iptables-nft") == 0
            tables = netns.run(netns.nsenter_argv(node.netns, ["nft", "list", "tables"]))
            assert "table ip nat" not in tables
            assert "table ip kube-proxy" not in tables
        pod_nat = netns.run(netns.nsenter_argv(node1.pod_netns, ["iptables-nft-save", "-t", "nat"]))
        assert "-A " not in pod_nat

        assert list(scaling(lab)) == ["ebpf"]   # auto follows the datapath the lab moved to
        ebpf = bench_run(lab, "ebpf")
        connect_syns, http_syns = syns(node2.pod_netns)
        assert connect_syns >= CONNECTS
        assert http_syns >= 100

        assert ipt["fingerprint"]["environment"] == "lab: netns, iptables-nft"
        assert ebpf["fingerprint"]["environment"] == "lab: netns, ebpf socket-lb"
        assert "iptables-nft NAT rules" in ipt["fingerprint"]["service_path"]
        assert "eBPF socket LB" in ebpf["fingerprint"]["service_path"]

        cmp = json.loads(cli(lab, "bench", "compare", "iptables", "ebpf", "-o", "json").stdout)
        assert [r["label"] for r in cmp["runs"]] == ["iptables", "ebpf"]
        rows = {r["metric"]: r for t in cmp["tables"] for r in t["rows"]}
        for metric in ("svc_connect.mean", "svc_connect.p99", "svc_http.p50", "svc_http.p99", "rtt.p50"):
            assert all(v is not None for v in rows[metric]["values"]), (metric, rows[metric])
        text = cli(lab, "bench", "compare", "iptables", "ebpf").stdout
        assert "Pod to Service (ClusterIP): connection setup" in text
        assert "ebpf socket-lb" in text
        assert "iptables-nft" in text
    finally:
        out = cli(lab, "lab", "down", "--name", name).stdout
    assert "removed" in out
    assert not SockLB(name).installed()
