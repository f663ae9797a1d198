"""The fingerprint as a pure function on the edges the scenarios do not cover, and the node-side
fallback on real processes."""

from __future__ import annotations

import copy
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cniscope.agent import cluster_api
from cniscope.core.fingerprint import ClusterObjects, NodeFacts, derive, from_node, kube_proxy_mode
from cniscope.core.hostpaths import HostPaths
from tests.k8s.apiserver import load_fixture

CM = "/api/v1/namespaces/kube-system/configmaps/"
DS = "/apis/apps/v1/namespaces/kube-system/daemonsets/"


def objects(letter: str) -> dict[str, Any]:
    out: dict[str, Any] = copy.deepcopy(load_fixture(f"scenario_{letter}.json")["objects"])
    return out


def cluster(o: dict[str, Any]) -> ClusterObjects:
    return ClusterObjects(cilium_config=o.get(CM + "cilium-config"), cilium=o.get(DS + "cilium"),
                          kube_proxy=o.get(DS + "kube-proxy"), kube_proxy_config=o.get(CM + "kube-proxy-config"),
                          aws_node=o.get(DS + "aws-node"))


def test_aws_node_patched_to_no_node_does_not_count() -> None:
    o = objects("d")
    aws = copy.deepcopy(objects("a")[DS + "aws-node"])
    aws["status"]["desiredNumberScheduled"] = 0          # the usual nodeSelector patch before Cilium ENI
    o[DS + "aws-node"] = aws
    fp = derive(cluster(o))
    assert fp.scenario() == "D"
    assert fp.notes == ()


def test_kube_proxy_left_running_next_to_kube_proxy_replacement_is_noted() -> None:
    o = objects("c")
    o[DS + "kube-proxy"] = objects("b")[DS + "kube-proxy"]
    fp = derive(cluster(o))
    assert fp.kube_proxy == "ebpf"
    assert any("kube-proxy still runs" in n for n in fp.notes)


def test_chaining_mode_is_its_own_cni() -> None:
    o = objects("b")
    o[CM + "cilium-config"]["data"]["cni-chaining-mode"] = "aws-cni"
    o[DS + "aws-node"] = objects("a")[DS + "aws-node"]
    fp = derive(cluster(o))
    assert fp.cni == "cilium+aws-cni"
    assert fp.scenario() is None


def test_partial_tuning_is_neither_d_nor_e() -> None:
    o = objects("d")
    o[CM + "cilium-config"]["data"]["enable-bandwidth-manager"] = "true"
    fp = derive(cluster(o))
    assert fp.tuning == ("bandwidth-manager", "socket-lb")          # socket LB comes with kube-proxy replacement
    assert fp.scenario() is None


def test_kube_proxy_mode_parsing() -> None:
    assert kube_proxy_mode(None) == "iptables"
    assert kube_proxy_mode({"config.conf": "kind: KubeProxyConfiguration\nmode: \"\"\n"}) == "iptables"
    assert kube_proxy_mode({"config.conf": "kind: KubeProxyConfiguration\nmode: ipvs\n"}) == "ipvs"
    assert kube_proxy_mode({"config": "kind: KubeProxyConfiguration\nmode: 'nftables'\n"}) == "nftables"


def test_nothing_installed_is_unknown() -> None:
    fp = derive(ClusterObjects())
    assert (fp.cni, fp.kube_proxy, fp.scenario()) == ("unknown", "none", None)


def test_node_facts_rules() -> None:
    assert from_node(NodeFacts(frozenset({"aws-k8s-agent", "kube-proxy"}))).cni == "aws-vpc-cni"
    fp = from_node(NodeFacts(frozenset({"cilium-agent"})))
    assert (fp.cni, fp.kube_proxy, fp.source) == ("cilium", "ebpf", "node")


@pytest.fixture
def fake_cilium_agent(tmp_path: Path) -> Iterator[int]:
    """A real process whose name is cilium-agent (a renamed sleep), ended afterwards."""
    exe = tmp_path / "cilium-agent"
    os.symlink("/bin/sleep", exe)
    proc = subprocess.Popen([str(exe), "30"])
    try:
        deadline = time.monotonic() + 5
        while Path(f"/proc/{proc.pid}/comm").read_text().strip() != "cilium-agent":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_node_fallback_sees_a_running_cni_agent(fake_cilium_agent: int) -> None:
    facts = cluster_api.node_facts(HostPaths())
    assert "cilium-agent" in facts.processes
    assert from_node(facts).cni == "cilium"
