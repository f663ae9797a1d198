"""The lab's eBPF service datapath on the real kernel: a pod's connect to a ClusterIP reaches a backend
through the cgroup ``connect4`` program with no iptables or nft rule anywhere in the lab; UDP goes
through ``sendmsg4``/``recvmsg4`` and ``getpeername`` reports the ClusterIP; the agents' census reads
the service map's exact entry count; a socket of the host namespace is never translated, in the lab's
cgroup or not; ``lab down`` leaves no program, map, link, pin, bpffs or cgroup."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from cniscope.agent.bpf import map_elems
from cniscope.agent.bpf import syscall as sc
from cniscope.agent.bpf.info import map_info
from cniscope.agent.inspectors.bpf import inspect_bpf
from cniscope.api.v1 import capabilities_pb2 as cap
from cniscope.core.hostpaths import HostPaths
from cniscope.lab import lab_cgroup, netns
from cniscope.lab.addressing import service_ip
from cniscope.lab.kubeproxy import Service
from cniscope.lab.lab import Lab
from cniscope.lab.socklb import cilium_lb as lb
from cniscope.lab.socklb.ebpf_services import EbpfServices, service_entries, write
from cniscope.lab.socklb.sock_lb import SockLB, bpffs_mounted
from cniscope.lab.socklb.sock_lb_load import link_pin, map_pin, prog_pin
from tests.waiting import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.bpf, pytest.mark.bcc]
PORT = 7411
UDP_IP = service_ip(4900)  # a UDP Service beside the run's TCP ones (a TCP Service never takes UDP)

# A backend: TCP accept-and-tell-the-peer and a UDP echo that answers with its own address.
BACKEND = """
import socket, threading, sys
me = sys.argv[1]
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 7411))
def udp():
    while True:
        data, peer = u.recvfrom(100); u.sendto(me.encode(), peer)
threading.Thread(target=udp, daemon=True).start()
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(("0.0.0.0", 7411)); t.listen(128)
print("ready", flush=True)
while True:
    c, _ = t.accept(); c.sendall(me.encode()); c.close()
"""

# A client: TCP connects and an unconnected UDP exchange, as JSON.
CLIENT = """
import json, socket, sys
ip, n, udp_ip = sys.argv[1], int(sys.argv[2]), sys.argv[3]
out = {"tcp": [], "peer": None}
for _ in range(n):
    s = socket.create_connection((ip, 7411), timeout=3)
    out["peer"] = s.getpeername()[0]
    out["tcp"].append(s.recv(100).decode()); s.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(3)
u.sendto(b"hi", (udp_ip, 7411)); data, src = u.recvfrom(100)
out["udp"] = [data.decode(), src[0]]
print(json.dumps(out))
"""

# A connected UDP socket (connect() sends nothing): where the kernel really points it, its cookie.
UDP_CONNECT = """
import json, socket, struct, sys
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
c.connect((sys.argv[1], 7411))
port = c.getsockname()[1]
remote = None
for line in open("/proc/self/net/udp").read().splitlines()[1:]:
    f = line.split()
    if int(f[1].split(":")[1], 16) == port:
        a, p = f[2].split(":")
        remote = [socket.inet_ntoa(struct.pack("<I", int(a, 16))), int(p, 16)]
cookie = struct.unpack("<Q", c.getsockopt(socket.SOL_SOCKET, 57, 8))[0]
print(json.dumps({"remote": remote, "peer": list(c.getpeername()), "cookie": cookie}))
"""


def run_as(lab: Lab | None, ns: str | None, code: str, *args: str) -> Any:
    """Run ``code`` with python in namespace ``ns`` (None: the host's), inside the lab's cgroup when
    ``lab`` is given; its JSON output."""
    argv = [sys.executable, "-c", code, *args]
    if ns:
        argv = netns.nsenter_argv(ns, argv)
    if lab is not None:
        procs = lab_cgroup.lab_cgroup(lab.spec.name) / lab_cgroup.PROCESSES / "cgroup.procs"  # type: ignore[operator]
        argv = ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh", *argv]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode == 0, r.stderr[-1500:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture
def ebpf_lab(lab: Lab) -> Iterator[tuple[Lab, EbpfServices]]:
    """A bare 3-node lab (no collector, no DNS table: not one nft or iptables rule anywhere) with a
    backend in every pod and the socket-LB datapath installed."""
    backends = []
    for n in lab.nodes():
        p = subprocess.Popen(netns.nsenter_argv(n.pod_netns, [sys.executable, "-c", BACKEND, n.pod_ip]),
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
        backends.append(p)
    svc = EbpfServices.of_lab(lab, PORT)
    try:
        svc.prepare()
        udp = Service(4900, "echo-udp", UDP_IP, PORT, PORT, tuple(n.pod_ip for n in lab.nodes()), "udp")
        write(svc.datapath, lb.entries([udp], svc._ids()))
        yield lab, svc
    finally:
        for p in backends:
            p.kill()
            p.wait()
        svc.cleanup()


def no_rules(ns: str) -> bool:
    return netns.exec_in(ns, ["nft", "list", "ruleset"]).strip() == "" and \
        "-A " not in netns.exec_in(ns, ["iptables-nft-save"])


def test_a_pod_reaches_a_clusterip_backend_through_the_ebpf_path_alone(ebpf_lab: tuple[Lab, EbpfServices]) -> None:
    lab, svc = ebpf_lab
    applied = svc.apply(4)
    assert all(no_rules(ns) for ns in lab.namespaces())
    pods = {n.pod_ip for n in lab.nodes()}
    out = run_as(lab, lab.nodes()[0].pod_netns, CLIENT, applied.target_ip, "30", UDP_IP)
    assert set(out["tcp"]) <= pods, out
    assert len(set(out["tcp"])) >= 2, out        # chosen at random among the 3 backends
    assert out["peer"] == applied.target_ip      # getpeername4
    assert out["udp"][0] in pods, out            # sendmsg4 on the way out ...
    assert out["udp"][1] == UDP_IP, out          # ... recvmsg4 on the way back
    conn = run_as(lab, lab.nodes()[0].pod_netns, UDP_CONNECT, UDP_IP)
    assert conn["remote"][0] in pods, conn       # the kernel's socket points at a backend
    assert conn["remote"][1] == PORT, conn
    assert conn["peer"] == [UDP_IP, PORT], conn
    with svc.datapath.open_map(lb.REVERSE_SK_MAP) as fd:
        key = conn["cookie"].to_bytes(8, "little") + bytes(int(x) for x in conn["remote"][0].split(".")) \
            + PORT.to_bytes(2, "big") + b"\0\0"
        assert map_elems.map_lookup(fd.fd, key, 8) is not None


def test_the_census_counts_exactly_what_was_programmed(ebpf_lab: tuple[Lab, EbpfServices]) -> None:
    _, svc = ebpf_lab
    with svc.datapath.open_map(lb.SERVICES_MAP) as fd:
        service_map_id = map_info(fd.fd).id
    for n in (4, 1000, 104):
        applied = svc.apply(n)
        assert applied.rules == {"all nodes": 4 * n + 4}   # and the UDP Service's 4
        assert service_entries(svc.datapath) == 4 * n + 4
        detail = inspect_bpf(HostPaths()).detail
        assert isinstance(detail, cap.BpfDetail)
        row = next(m for m in detail.maps if m.id == service_map_id)
        assert (row.name, row.cilium_class, row.entries, row.max_entries) == ("cilium_lb4_serv", "service",
                                                                              4 * n + 4, 65536)
        assert row.fill == round((4 * n + 4) / 65536, 6)
        backends = [m for m in detail.maps if m.name == "cilium_lb4_back" and m.entries == 3]
        assert backends, "the three pods are three backends, however many Services share them"


def test_host_namespace_sockets_are_never_translated(ebpf_lab: tuple[Lab, EbpfServices]) -> None:
    """connect() of a UDP socket sends no packet, so the host namespace can be asked where a socket
    to a ClusterIP points without anything leaving the machine."""
    lab, svc = ebpf_lab
    outside = run_as(None, None, UDP_CONNECT, UDP_IP)
    inside = run_as(lab, None, UDP_CONNECT, UDP_IP)   # a lab process in the host namespace
    pod = run_as(lab, lab.nodes()[0].pod_netns, UDP_CONNECT, UDP_IP)
    for host in (outside, inside):
        assert host["remote"] == [UDP_IP, PORT], host
        assert host["peer"] == [UDP_IP, PORT], host
    assert pod["remote"][0] != UDP_IP, pod
    with svc.datapath.open_map(lb.REVERSE_SK_MAP) as fd:
        cookies = {int.from_bytes(k[:8], "little") for k in map_elems.map_keys(fd.fd, 16, 100_000)}
    assert pod["cookie"] in cookies
    assert outside["cookie"] not in cookies
    assert inside["cookie"] not in cookies


def bpftool(kind: str) -> dict[int, str]:
    out = subprocess.run(["bpftool", "-j", kind, "show"], capture_output=True, text=True, check=True).stdout
    return {int(o["id"]): str(o.get("name", o.get("type", ""))) for o in json.loads(out or "[]")}


def test_lab_down_leaves_no_program_map_link_pin_or_cgroup(lab: Lab) -> None:
    before = {k: bpftool(k) for k in ("prog", "map", "link")}
    lab.start_cluster(db=lab.dir / "c.db", sample_interval=0.5)
    svc = EbpfServices.of_lab(lab, PORT)
    svc.prepare()
    svc.apply(104)
    dp = svc.datapath
    ours: dict[str, set[int]] = {"prog": set(), "map": set(), "link": set()}
    for kind, pins in (("prog", [prog_pin(dp.bpffs, p) for p, _ in lb.PROGRAMS]),
                       ("map", [map_pin(dp.bpffs, m) for m in lb.MAPS]),
                       ("link", [link_pin(dp.bpffs, p) for p, _ in lb.PROGRAMS])):
        for pin in pins:
            with sc.obj_get(str(pin), flags=0) as fd:
                info = sc.fdinfo(fd.fd)
            ours[kind].add(int(info[f"{kind}_id"]))
    assert all(len(v) == n for v, n in zip(ours.values(), (4, 5, 4), strict=True)), ours
    agent = lab.record("agent:node1")
    assert agent is not None
    assert lab_cgroup.member(lab.spec.name, agent.pid)
    cg = lab_cgroup.lab_cgroup(lab.spec.name)
    assert cg is not None
    assert cg.exists()

    removed = lab.down()
    assert any(r.startswith("bpf pin cniscope/sock4_connect_link") for r in removed), removed
    assert not bpffs_mounted(dp.bpffs)
    assert not dp.bpffs.exists()
    assert not cg.exists()
    for kind in ("prog", "map", "link"):  # the kernel frees them once the last reference went
        wait_for(lambda k=kind: not (ours[k] & set(bpftool(k))), 10, f"our {kind}s to be freed")  # type: ignore[misc]
        assert not (set(bpftool(kind)) - set(before[kind])) & ours[kind]
    assert not SockLB(lab.spec.name).installed()
