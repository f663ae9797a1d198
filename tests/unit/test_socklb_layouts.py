"""The socket-LB maps' byte layouts are Cilium's (lib/lb.h), N Services make the entries Cilium's
agent would write, and the lab finds the cgroup v2 hierarchy in /proc/mounts."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

from cniscope.lab import kubeproxy, lab_cgroup
from cniscope.lab.socklb import cilium_lb as lb

PODS = ["198.19.1.11", "198.19.2.11", "198.19.3.11"]


def test_layouts_match_cilium_structs() -> None:
    key = lb.lb4_key("198.18.64.10", 7411, slot=2, proto=socket.IPPROTO_TCP)
    assert len(key) == lb.KEY_SIZE[lb.SERVICES_MAP] == 12
    assert key[:4] == socket.inet_aton("198.18.64.10")
    assert key[4:6] == struct.pack("!H", 7411)              # __be16 dport
    assert key[6:8] == struct.pack("<H", 2)                 # __u16 backend_slot, host order
    assert key[8:] == bytes([6, 0, 0, 0])                   # proto, scope, pad[2]
    assert lb.Lb4Key.unpack(key) == lb.Lb4Key("198.18.64.10", 7411, 2, 6)
    svc = lb.lb4_service(backend_id=101, count=0, rev_nat_index=7)
    assert len(svc) == lb.VALUE_SIZE[lb.SERVICES_MAP] == 12
    assert lb.Lb4Service.unpack(svc) == lb.Lb4Service(101, 0, 7)
    be = lb.lb4_backend("198.19.2.11", 7411)
    assert len(be) == lb.VALUE_SIZE[lb.BACKENDS_MAP] == 12
    assert lb.unpack_backend(be) == ("198.19.2.11", 7411)
    assert len(lb.revnat_value("198.18.64.10", 7411)) == lb.VALUE_SIZE[lb.REVNAT_MAP]
    assert [lb.kernel_name(m) for m in lb.MAPS] == ["cilium_lb4_serv", "cilium_lb4_back", "cilium_lb4_reve",
                                                    "cilium_lb4_reve", "cniscope_labns"]


def test_n_services_are_a_frontend_and_a_slot_per_backend_over_shared_backends() -> None:
    services = kubeproxy.plan(1000, PODS, port=7411, target_port=7411)
    ids = lb.backend_ids(services, first_id=100)
    assert ids == {(PODS[0], 7411): 100, (PODS[1], 7411): 101, (PODS[2], 7411): 102}
    e = lb.entries(services, ids)
    assert (len(e.frontends), len(e.slots), len(e.backends), len(e.revnat)) == (1000, 3000, 3, 1000)
    assert e.service_entries == 4000
    first = {lb.Lb4Key.unpack(k): lb.Lb4Service.unpack(v) for k, v in e.frontends[:1] + e.slots[:3]}
    assert first[lb.Lb4Key("198.18.64.10", 7411, 0, 6)] == lb.Lb4Service(0, 3, 1)   # count 3, rev NAT 1
    assert {first[lb.Lb4Key("198.18.64.10", 7411, s, 6)].backend_id for s in (1, 2, 3)} == {100, 101, 102}


def test_the_cgroup2_mount_comes_from_proc_mounts(tmp_path: Path) -> None:
    hybrid = tmp_path / "hybrid"
    hybrid.write_text("tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n"
                      "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n")
    unified = tmp_path / "unified"
    unified.write_text("cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n")
    v1 = tmp_path / "v1"
    v1.write_text("cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n")
    assert lab_cgroup.cgroup2_mount(hybrid) == Path("/sys/fs/cgroup/unified")
    assert lab_cgroup.cgroup2_mount(unified) == Path("/sys/fs/cgroup")
    assert lab_cgroup.cgroup2_mount(v1) is None
    assert lab_cgroup.lab_cgroup("x", hybrid) == Path("/sys/fs/cgroup/unified/cniscope-lab/x")
