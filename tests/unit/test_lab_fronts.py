"""The Services a lab fronts its probe pods with: one ClusterIP per node in the block above every
planned Service, the two probe ports, reverse-NAT indices and backend ids clear of kube-dns's and of a
scaling run's, fillers inside the planned range (so a scaling run's cleanup removes them, not the
fronts)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from cniscope.core.errors import ValidationError
from cniscope.lab import addressing, lab_fronts
from cniscope.lab.lab import Lab, LabSpec
from cniscope.lab.socklb import cilium_lb as lb
from cniscope.lab.socklb import ebpf_services as ebpf


def test_one_front_per_node_on_both_probe_ports(tmp_path: Path) -> None:
    lab = Lab(LabSpec(name="fr", nodes=3), state_root=tmp_path)
    fronts = lab_fronts.front_services(lab)
    assert [(s.cluster_ip, s.port, s.target_port, s.endpoints) for s in fronts[:2]] == [
        ("198.18.127.1", 7411, 7411, ("198.19.1.11",)), ("198.18.127.1", 7412, 7412, ("198.19.1.11",))]
    assert {s.cluster_ip for s in fronts} == {"198.18.127.1", "198.18.127.2", "198.18.127.3"}
    assert len({s.name for s in fronts}) == len(fronts) == 6   # kube-proxy's chains are named after them


def test_fronts_stay_clear_of_kube_dns_and_scaling_runs(tmp_path: Path) -> None:
    big = lab_fronts.front_services(Lab(LabSpec(name="fr", nodes=addressing.MAX_NODES), state_root=tmp_path))
    rev = [lb.rev_nat_index(s) for s in big]
    assert min(rev) > ebpf.BASE_REV_NAT + 1           # kube-dns holds BASE_REV_NAT and +1
    assert max(rev) < 2**16                            # Cilium's reverse-NAT index is 16 bits
    assert lab_fronts.FIRST_FRONT_BACKEND + len(big) <= ebpf.FIRST_BACKEND_ID
    last_planned = ipaddress.IPv4Address(addressing.service_ip(lab_fronts.MAX_FILLERS * 3))
    assert int(last_planned) < int(addressing.FRONT_NET.network_address)
    assert all(ipaddress.ip_address(s.cluster_ip) in addressing.FRONT_NET for s in big)


def test_fillers_are_planned_services_over_the_pods(tmp_path: Path) -> None:
    lab = Lab(LabSpec(name="fr", nodes=2), state_root=tmp_path)
    fill = lab_fronts.filler_services(lab, 1000)
    assert len(fill) == 1000
    assert fill[0].cluster_ip == addressing.service_ip(0)
    assert {len(s.endpoints) for s in fill} == {2}     # two pods: two endpoints each
    with pytest.raises(ValidationError):
        lab_fronts.filler_services(lab, lab_fronts.MAX_FILLERS + 1)
