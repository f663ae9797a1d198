"""NIC/XDP: the read-only xdp-features report against the opt-in attach test, and XDP programs in
the census, on interfaces created in a private network namespace."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent))

from bpfhelpers import private_bpffs, xdp_netns  # type: ignore[import-not-found]  # noqa: E402

from cniscope.agent import netlink as nl  # noqa: E402
from cniscope.agent.bpf import syscall as sc  # noqa: E402
from cniscope.agent.inspectors.bpf import prog_census  # noqa: E402
from cniscope.agent.inspectors.nic import nic_report  # noqa: E402
from cniscope.agent.xdp_trial import run_xdp_test  # noqa: E402
from cniscope.api.v1 import capabilities_pb2 as cap  # noqa: E402
from cniscope.core.errors import NotFound, ValidationError  # noqa: E402

pytestmark = [pytest.mark.netns, pytest.mark.bpf]


@pytest.fixture
def ns() -> Iterator[tuple[str, dict[str, str]]]:
    with xdp_netns("n") as made:
        yield made


def _link(netns: str, name: str) -> nl.Link:
    return next(link for link in nl.links(netns) if link.name == name)


def test_feature_report_veth_native_others_generic_only(ns: tuple[str, dict[str, str]]) -> None:
    path, kinds = ns
    assert {"veth", "bridge", "macvlan", "vxlan"} <= set(kinds.values())
    rows = {r.name: r for r in nic_report(path)}
    assert rows["va"].HasField("xdp_native")
    assert rows["va"].xdp_native is True
    assert "basic" in rows["va"].xdp_features
    assert rows["va"].driver == "veth"
    assert rows["va"].virtual
    assert not rows["va"].HasField("speed_mbps")
    for ifname, kind in kinds.items():
        if kind != "veth":
            assert rows[ifname].HasField("xdp_native"), ifname
            assert rows[ifname].xdp_native is False, (ifname, rows[ifname])
            assert rows[ifname].kind == kind
    assert all(r.xdp_mode == "none" for r in rows.values())


def test_opt_in_attach_agrees_with_read_only_report(ns: tuple[str, dict[str, str]]) -> None:
    path, kinds = ns
    for ifname, kind in kinds.items():
        out = run_xdp_test(ifname, ["native", "generic", "link"], netns=path)
        res = out["results"]
        assert out["agrees"] is True, out
        assert res["native"]["ok"] is (kind == "veth"), out
        assert res["generic"]["ok"]
        assert res["generic"]["attached_mode"] == "generic"
        assert res["link"]["ok"]
        assert res["link"]["attached_mode"] == ("native" if kind == "veth" else "generic")
        if kind != "veth":
            assert "native mode" in res["native"]["extack"]
        assert out["left_attached"] == "none"
    # nothing else in the namespace was touched
    assert all(link.xdp_mode == "none" for link in nl.links(path))


def test_opt_in_never_replaces_an_existing_program(ns: tuple[str, dict[str, str]]) -> None:
    path, _ = ns
    va = _link(path, "va")
    with sc.prog_load_xdp_pass("theirs") as prog:
        nl.set_xdp(va.index, prog.fd, nl.XDP_FLAGS_DRV_MODE, netns=path)
        try:
            out = run_xdp_test("va", [], netns=path)
            assert "refused" in out
            assert out["results"] == {}
            assert _link(path, "va").xdp_mode == "native"
        finally:
            nl.set_xdp(va.index, -1, nl.XDP_FLAGS_DRV_MODE, netns=path)


def test_opt_in_refuses_unknown_interface_and_mode(ns: tuple[str, dict[str, str]]) -> None:
    path, _ = ns
    with pytest.raises(NotFound):
        run_xdp_test("nosuch0", ["native"], netns=path)
    with pytest.raises(ValidationError):
        run_xdp_test("va", ["offload"], netns=path)


def test_census_lists_xdp_programs_with_mode(ns: tuple[str, dict[str, str]]) -> None:
    path, _ = ns
    va, br = _link(path, "va"), _link(path, "br0")
    vb = _link(path, "vb")
    with sc.prog_load_xdp_pass("cns_census") as prog:
        pid = next(p.id for p in prog_census(netns=path)[0] if p.name == "cns_census")
        nl.set_xdp(va.index, prog.fd, nl.XDP_FLAGS_DRV_MODE, netns=path)
        nl.set_xdp(br.index, prog.fd, nl.XDP_FLAGS_SKB_MODE, netns=path)
        try:
            with nl.in_netns(path):
                link = sc.link_create(prog.fd, vb.index, sc.ATTACH_BPF_XDP)
            with link:
                rows = {p.id: p for p in prog_census(netns=path)[0]}
                att = list(rows[pid].attached)
                assert rows[pid].type == "xdp"
                assert cap.BpfAttachment(prog_id=pid, hook="xdp", interface="va", ifindex=va.index, mode="native",
                                         source="netlink") in att
                assert cap.BpfAttachment(prog_id=pid, hook="xdp", interface="br0", ifindex=br.index,
                                         mode="generic", source="netlink") in att
                assert any(a.source == "link" and a.interface == "vb" for a in att)
                nic = {r.name: r for r in nic_report(path)}
                assert nic["va"].xdp_mode == "native"
                assert dict(nic["va"].xdp_prog_ids) == {"native": pid}
                assert nic["br0"].xdp_mode == "generic"
        finally:
            nl.set_xdp(va.index, -1, nl.XDP_FLAGS_DRV_MODE, netns=path)
            nl.set_xdp(br.index, -1, nl.XDP_FLAGS_SKB_MODE, netns=path)
    assert all(link.xdp_mode == "none" for link in nl.links(path))


def test_census_lists_tcx_and_tc_attachments(ns: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    """A tcx link (bpf_link) and a classic tc cls_bpf filter (netlink, seen through bpftool)."""
    if shutil.which("bpftool") is None:
        pytest.fail("bpftool is in the host setup's package list and must be installed")
    path, _ = ns
    va = _link(path, "va")
    with sc.prog_load(sc.PROG_TYPE_SCHED_CLS, sc.SCHED_CLS_OK_INSNS, "cns_tcx") as tcx, \
            sc.prog_load(sc.PROG_TYPE_SCHED_CLS, sc.SCHED_CLS_OK_INSNS, "cns_cls") as cls, \
            private_bpffs(tmp_path / "bpffs") as root:
        sc.obj_pin(cls.fd, str(root / "cls"))
        with nl.in_netns(path):
            link = sc.link_create(tcx.fd, va.index, sc.ATTACH_TCX_INGRESS)
        tc = ["nsenter", f"--net={path}", "tc"]
        try:
            r = subprocess.run([*tc, "qdisc", "add", "dev", "va", "clsact"], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            r = subprocess.run([*tc, "filter", "add", "dev", "va", "egress", "bpf", "da", "object-pinned",
                                str(root / "cls")], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            rows = {p.name: p for p in prog_census(pin_roots=[root], netns=path)[0]}
            tcx_att = rows["cns_tcx"].attached
            assert [(a.hook, a.mode, a.interface, a.source) for a in tcx_att] == \
                [("tcx", "tcx_ingress", "va", "link")]
            cls_att = rows["cns_cls"].attached
            assert [(a.hook, a.mode, a.interface) for a in cls_att] == [("tc", "clsact/egress", "va")]
            assert list(rows["cns_cls"].pins) == [str(root / "cls")]
        finally:
            subprocess.run([*tc, "qdisc", "del", "dev", "va", "clsact"], capture_output=True)
            link.close()


def test_census_lists_cgroup_attachments_with_and_without_links(tmp_path: Path) -> None:
    """On a private cgroup v2 mount: one program attached the classic way, one through a bpf_link."""
    root = tmp_path / "cg2"
    root.mkdir()
    r = subprocess.run(["mount", "-t", "cgroup2", "none", str(root)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    child = root / "cnsx"
    try:
        child.mkdir()
        cg = os.open(child, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with sc.prog_load(sc.PROG_TYPE_CGROUP_SKB, sc.CGROUP_SKB_ALLOW_INSNS, "cns_cg_classic") as classic, \
                    sc.prog_load(sc.PROG_TYPE_CGROUP_SKB, sc.CGROUP_SKB_ALLOW_INSNS, "cns_cg_link",
                                 sc.ATTACH_CGROUP_INET_EGRESS) as linked:
                sc.prog_attach(cg, classic.fd, sc.ATTACH_CGROUP_INET_INGRESS)
                try:
                    with sc.link_create(linked.fd, cg, sc.ATTACH_CGROUP_INET_EGRESS):
                        rows = {p.name: p for p in prog_census(cgroup_roots=[root])[0]}
                finally:
                    sc.prog_detach(cg, classic.fd, sc.ATTACH_CGROUP_INET_INGRESS)
        finally:
            os.close(cg)
    finally:
        if child.exists():
            child.rmdir()
        subprocess.run(["umount", str(root)], capture_output=True)
    assert [(a.hook, a.mode, a.cgroup, a.source) for a in rows["cns_cg_classic"].attached] == \
        [("cgroup", "cgroup_inet_ingress", str(child), "bpftool")]
    (la,) = rows["cns_cg_link"].attached
    assert (la.hook, la.mode, la.cgroup, la.source) == ("cgroup", "cgroup_inet_egress", str(child), "link")
    assert la.cgroup_id > 0


def test_readiness_counts_only_this_namespaces_nics(ns: tuple[str, dict[str, str]]) -> None:
    """The readiness unit finds physical NICs through sysfs, which a process entering a network
    namespace with nsenter still sees from the host. Inside a namespace with only virtual links it
    must find no NIC, whatever the host's sysfs lists; on the host it finds the host's."""
    from cniscope.agent.inspectors.readiness import _nics
    from cniscope.core.hostpaths import HostPaths

    host = [n.name for n in _nics(HostPaths())]
    host_physical = [link.name for link in nl.links() if not link.virtual]
    assert host == sorted(n for n in host_physical if Path(f"/sys/class/net/{n}/device").exists())
    with nl.in_netns(ns[0]):
        inside = _nics(HostPaths())
    assert inside == [], inside
