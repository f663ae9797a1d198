"""The lab's service-scaling backends as the collector receives them: one named factory per
kube-proxy rule flavour, ``auto``'s choice first, each building rules for the lab a request names
(its shape as it was built) — and the collector resolves names only from what it was given."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cniscope.api.v1 import runs_pb2
from cniscope.collector.runs.service_backend import resolve_backends
from cniscope.core.errors import ValidationError
from cniscope.lab import lab as lab_module
from cniscope.lab.lab_services import SERVICE_PORT, LabServices, lab_backends
from cniscope.lab.socklb.ebpf_services import EbpfServices
from cniscope.lab.socklb.sock_lb import SockLB


def test_one_factory_per_rule_flavour_with_auto_first() -> None:
    backends = lab_backends(default_lab="notup")     # a lab whose socket-LB datapath is not installed
    assert list(backends) == ["iptables-nft", "iptables-legacy", "nft", "ebpf"]
    req = runs_pb2.ServiceScalingRequest(backend="auto")
    assert resolve_backends(req, in_lab=True, lab=list(backends)) == ["iptables-nft"]


def test_ebpf_comes_first_for_a_lab_that_runs_on_the_socket_lb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SockLB, "installed", lambda self: self.lab == "onebpf")
    assert list(lab_backends(default_lab="onebpf"))[0] == "ebpf"
    assert list(lab_backends(default_lab="other"))[0] == "iptables-nft"
    made = lab_backends(default_lab="onebpf")["ebpf"]("")
    assert isinstance(made, EbpfServices)
    assert made.name == "ebpf"
    assert (made.datapath.lab, made.port, len(made.endpoints)) == ("onebpf", SERVICE_PORT, 3)


def test_a_factory_reads_the_named_lab_as_it_was_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lab_module, "STATE_ROOT", tmp_path)
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "state.json").write_text(json.dumps({"spec": {"nodes": 5, "pods_per_node": 2}}))
    backends = lab_backends(default_lab="big")
    made = backends["nft"]("")                     # "" = the lab the collector serves
    assert isinstance(made, LabServices)
    assert made.name == "nft"
    assert made.node_netns == [f"cnsbig-node{i}" for i in range(1, 6)]
    assert len(made.endpoints) == 10
    assert all(ip.startswith("198.19.") for ip in made.endpoints)
    other = backends["iptables-legacy"]("small")   # a lab that is not up: the default shape
    assert isinstance(other, LabServices)
    assert other.node_netns == ["cnssmall-node1", "cnssmall-node2", "cnssmall-node3"]
    assert SERVICE_PORT == 7411


def test_an_unknown_flavour_is_refused() -> None:
    with pytest.raises(ValidationError, match="backend must be one of iptables-nft, iptables-legacy, nft"):
        LabServices(["cns-node1"], ["198.19.1.11"], "ipvs")
