"""Pure parsers of the eBPF/NIC units, on recorded real output and malformed twins."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from cniscope.agent import netlink as nl
from cniscope.agent.bpf.info import parse_cpu_list
from cniscope.agent.bpf.syscall import parse_fdinfo
from cniscope.agent.inspectors.bpf import (
    cilium_class,
    cilium_summary,
    parse_bpftool_cgroup_tree,
    parse_bpftool_net,
)
from cniscope.api.v1 import capabilities_pb2 as cap
from cniscope.core.errors import ParseError

FIX = Path(__file__).parent.parent / "fixtures" / "bpftool"


def test_bpftool_net_recorded() -> None:
    rows = parse_bpftool_net((FIX / "net_ok.json").read_text())
    xdp = [(r.interface, r.mode) for r in rows if r.hook == "xdp"]
    assert xdp == [("vb", "driver"), ("va", "driver"), ("br0", "generic")]
    tc = [r for r in rows if r.hook == "tc"]
    assert tc == [cap.BpfAttachment(prog_id=107, hook="tc", interface="va", ifindex=3, mode="clsact/ingress",
                                    source="bpftool")]


@pytest.mark.parametrize("text", [(FIX / "net_truncated.json").read_text(), "{}", "[1]",
                                  '[{"xdp":[{"devname":"x"}]}]'])
def test_bpftool_net_malformed_is_parse_error(text: str) -> None:
    with pytest.raises(ParseError):
        parse_bpftool_net(text)


@pytest.mark.parametrize(("name", "cls"), [
    ("cilium_lb4_serv", "service"), ("cilium_lb6_reve", "revnat"), ("cilium_lb4_back", "backend"),
    ("cilium_ct4_glob", "conntrack"), ("cilium_ct_any4_", "conntrack"), ("cilium_snat_v4_", "nat"),
    ("cilium_ipcache", "ipcache"), ("cilium_policy_0", "policy"), ("cilium_metrics", None), ("lb4_serv", None),
])
def test_cilium_class_by_truncated_name(name: str, cls: str | None) -> None:
    assert cilium_class(name) == cls


def test_cilium_summary_skips_uncounted_maps() -> None:
    maps = [cap.BpfMap(name="cilium_ct4_glob", cilium_class="conntrack", entries=10, max_entries=100),
            cap.BpfMap(name="cilium_ct_any4_", cilium_class="conntrack", max_entries=100),
            cap.BpfMap(name="x", entries=5, max_entries=5)]
    assert cilium_summary(maps) == {"conntrack": cap.CiliumMapClass(maps=["cilium_ct4_glob"], entries=10,
                                                                    max_entries=100, fill=0.1)}


def test_fdinfo_and_cpu_list() -> None:
    text = "pos:\t0\nflags:\t02000002\nmap_type:\t1\nmemlock:\t903184\nmap_id:\t26\n"
    assert parse_fdinfo(text)["memlock"] == "903184"
    assert parse_cpu_list("0-1\n") == 2
    assert parse_cpu_list("0,2-3,8") == 4


def test_xdp_feature_bits() -> None:
    assert nl.decode_xdp_features(43) == ["basic", "redirect", "xsk-zerocopy", "rx-sg"]
    assert nl.decode_xdp_features(0) == []
    assert nl.decode_xdp_features(1 << 9) == ["0x200"]


def test_netlink_error_with_extack() -> None:
    msg = b"Underlying driver does not support XDP in native mode\0"
    payload = struct.pack("i", -95) + bytes(16) + nl.attr(nl.NLMSGERR_ATTR_MSG, msg)
    assert nl.parse_error(payload, 0x200) == (95, "Underlying driver does not support XDP in native mode")
    assert nl.parse_error(payload, 0) == (95, "")
    assert nl.parse_error(struct.pack("i", 0) + bytes(16), 0) == (0, "")


def test_netdev_dev_message() -> None:
    # recorded NETDEV_CMD_DEV_GET reply for a virtio_net interface (ifindex 4)
    raw = bytes.fromhex("0101000008000100040000000c0003002b000000000000000c00050000000000000000000c0006"
                        "0000000000000000000800040001000000")
    f = nl.parse_dev(raw)
    assert (f.ifindex, f.bits, f.native, f.zc_max_segs) == (4, 43, True, 1)
    trunc = nl.parse_dev(raw[:14])
    assert trunc.bits == 0
    assert not trunc.native


def test_bpftool_cgroup_tree_recorded() -> None:
    rows = parse_bpftool_cgroup_tree((FIX / "cgroup_tree_ok.json").read_text())
    assert [(r.cgroup, r.mode, r.flags) for r in rows] == [
        ("/tmp/cg2t/cnsx", "cgroup_inet_ingress", ""), ("/tmp/cg2t/cnsx", "cgroup_inet_egress", "multi")]
    assert parse_bpftool_cgroup_tree("") == []


@pytest.mark.parametrize("text", [(FIX / "cgroup_tree_truncated.json").read_text(), "{}",
                                  '[{"cgroup":"/x"}]', '[{"cgroup":"/x","programs":[{"name":"p"}]}]'])
def test_bpftool_cgroup_tree_malformed(text: str) -> None:
    with pytest.raises(ParseError):
        parse_bpftool_cgroup_tree(text)
