"""The lab: built inside namespaces only, idempotent, no way out, and gone without a trace."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from cniscope.lab import netns
from cniscope.lab.lab import Lab, LabSpec

pytestmark = pytest.mark.netns


def _host_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def _host_procs() -> set[int]:
    return {int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()}


def test_up_twice_then_down_leaves_nothing(tmp_path: Path) -> None:
    before_links = _host_links()
    lab = Lab(LabSpec(name="lt1", nodes=3), state_root=tmp_path)
    try:
        lab.up()
        assert _host_links() == before_links, "the lab created a link in the host namespace"
        st = lab.up()  # idempotent
        assert st["up"] is True
        assert len(st["namespaces"]) == 7
        rec = lab.spawn("sleeper", lab.node_ns(1), ["sleep", "300"])
        assert rec.pid in _host_procs()
    finally:
        lab.down()
    assert not [n for n in netns.list_names() if n.startswith(lab.prefix + "-")]
    assert _host_links() == before_links
    assert rec.pid not in _host_procs() or not Path(f"/proc/{rec.pid}/cmdline").read_bytes().startswith(b"sleep")
    assert not lab.dir.exists()


def test_pods_reach_each_other_and_nothing_else(lab: Lab) -> None:
    n1, n2 = lab.nodes()[0], lab.nodes()[1]
    out = netns.exec_in(n1.pod_netns, ["ping", "-n", "-c", "2", "-i", "0.1", "-W", "1", n2.pod_ip])
    assert "2 received" in out
    for ns in lab.namespaces():
        routes = netns.exec_in(ns, ["ip", "route", "show", "default"])
        assert routes.strip() == "", f"{ns} has a default route: {routes}"
        r = subprocess.run(netns.nsenter_argv(ns, ["ip", "route", "get", "192.0.2.1"]),
                           capture_output=True, text=True)
        assert r.returncode != 0, f"{ns} can route to an outside address: {r.stdout}"


def test_addresses_stay_in_the_benchmark_range(lab: Lab) -> None:
    import ipaddress

    lab_range = ipaddress.ip_network("198.18.0.0/15")
    for ns in lab.namespaces():
        out = netns.exec_in(ns, ["ip", "-o", "-4", "addr", "show"])
        for line in out.splitlines():
            addr = ipaddress.ip_interface(line.split()[3]).ip
            assert addr.is_loopback or addr in lab_range, f"{ns}: {addr}"


def test_bridge_netfilter_is_off_in_the_fabric(lab: Lab) -> None:
    path = "/proc/sys/net/bridge/bridge-nf-call-iptables"
    out = subprocess.run(netns.nsenter_argv(lab.fabric, ["cat", path]), capture_output=True, text=True)
    if out.returncode == 0:
        assert out.stdout.strip() == "0"


def test_a_different_shape_is_refused_until_down(lab_factory: Callable[..., Lab], tmp_path: Path) -> None:
    lab = lab_factory(nodes=2)
    other = Lab(LabSpec(name=lab.spec.name, nodes=3), state_root=lab.dir.parent)
    with pytest.raises(Exception, match="different shape"):
        other.up()
