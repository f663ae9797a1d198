"""The lab's ``ebpf`` service backend: Services programmed into the socket-LB datapath's maps.

:class:`EbpfServices` implements the collector's ``ServiceBackend`` as Cilium's agent syncs its
service maps: a step writes or deletes only the Services that changed (backends, then slots, then
frontends; deletion the other way round), one batched ``bpf()`` call per map. No iptables or nft
rule is involved — ``prepare`` removes kube-proxy's tables from the node namespaces, so a pod's
connect to a ClusterIP is translated by the ``connect4`` program alone. What a step counts is the
service map's entries as the kernel holds them (frontend + one slot per backend, per Service).

A datapath this backend installed for the run is removed again by ``cleanup``; one the lab runs on
(``lab up --datapath ebpf``, which also programs the lab's kube-dns Service) stays, emptied of the
run's Services.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cniscope.agent.bpf import count_entries, map_elems
from cniscope.agent.bpf import syscall as sc
from cniscope.agent.bpf.info import map_info
from cniscope.collector.runs.service_backend import Applied
from cniscope.core.errors import ValidationError
from cniscope.lab import kubeproxy, labdns, netns
from cniscope.lab.addressing import FRONT_NET, service_ip
from cniscope.lab.lab import Lab
from cniscope.lab.socklb import cilium_lb as lb
from cniscope.lab.socklb.sock_lb import SockLB

EBPF = "ebpf"
SIGNAL = "BPF service map entries"
PROXY_NOTE = "does not apply: no kube-proxy — the lab's socket-LB programs translate ClusterIPs (see the load time)"
FIRST_BACKEND_ID = 1000       # the run's backends; the lab's own Services use ids below
BASE_REV_NAT = 65000          # the lab's own Services' reverse-NAT indices; the run's are 1..N
FIRST_SCALING_IP = service_ip(0)


def _table(entries: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes, int]:
    return b"".join(k for k, _ in entries), b"".join(v for _, v in entries), len(entries)


@dataclass
class EbpfServices:
    """Services in the maps of the lab's socket-LB datapath."""

    datapath: SockLB
    node_netns: list[str]
    endpoints: list[str]
    port: int
    name: str = field(default=EBPF, init=False)
    _loaded: int = 0
    _installed_here: bool = False
    on_cleanup: Callable[[], None] | None = None   # the lab's own Services brought back / re-recorded

    @classmethod
    def of_lab(cls, lab: Lab, port: int) -> EbpfServices:
        nodes = lab.nodes()
        return cls(datapath_of(lab), [n.netns for n in nodes], [p["ip"] for n in nodes for p in n.pods], port)

    def _plan(self, n: int, first: int = 0) -> list[kubeproxy.Service]:
        return kubeproxy.plan(n, self.endpoints, port=self.port, target_port=self.port, first=first)

    def _ids(self) -> dict[tuple[str, int], int]:
        return scaling_ids(self.endpoints, self.port)

    def prepare(self) -> None:
        self._installed_here = self.datapath.install()
        for ns in self.node_netns:
            drop_kube_proxy_tables(ns)
        clear_scaling(self.datapath)
        self._loaded = 0

    def apply(self, n: int) -> Applied:
        if n < 1:
            raise ValidationError("a scaling step needs at least one Service")
        t0 = time.perf_counter()
        if n > self._loaded:
            write(self.datapath, lb.entries(self._plan(n - self._loaded, first=self._loaded), self._ids()))
        elif n < self._loaded:
            delete(self.datapath, lb.entries(self._plan(self._loaded - n, first=n), self._ids()))
        took = time.perf_counter() - t0
        self._loaded = n
        last, head = self._plan(1, first=n - 1)[0], self._plan(1)[0]
        return Applied(last.cluster_ip, self.port, {"all nodes": service_entries(self.datapath)}, took,
                       head.cluster_ip, signal=SIGNAL, proxy_note=PROXY_NOTE)

    def cleanup(self) -> None:
        if self.datapath.installed():
            clear_scaling(self.datapath)
            if self._installed_here:
                self.datapath.uninstall()
        self._loaded = 0
        if self.on_cleanup is not None:
            self.on_cleanup()


def scaling_ids(endpoints: list[str], port: int) -> dict[tuple[str, int], int]:
    """Backend ids of planned Services (a scaling run's, a lab's fillers): one per endpoint."""
    return {(ep, port): FIRST_BACKEND_ID + k for k, ep in enumerate(dict.fromkeys(endpoints))}


def write(dp: SockLB, e: lb.Entries) -> None:
    """Backends, slots, frontends and reverse-NAT entries, one batched update per map."""
    for name, rows in ((lb.BACKENDS_MAP, e.backends), (lb.SERVICES_MAP, e.slots), (lb.SERVICES_MAP, e.frontends),
                       (lb.REVNAT_MAP, e.revnat)):
        if rows:
            with dp.open_map(name) as fd:
                sc.map_update_batch(fd.fd, *_table(rows))


def delete(dp: SockLB, e: lb.Entries) -> None:
    """Frontends first (a lookup stops finding the Service), then its slots and reverse NAT."""
    for name, rows in ((lb.SERVICES_MAP, e.frontends), (lb.SERVICES_MAP, e.slots), (lb.REVNAT_MAP, e.revnat)):
        with dp.open_map(name) as fd:
            for k, _ in rows:
                map_elems.map_delete(fd.fd, k)


def service_entries(dp: SockLB) -> int:
    """``cilium_lb4_services_v2``'s entries as the kernel counts them (what the agents' census reads)."""
    with dp.open_map(lb.SERVICES_MAP) as fd:
        c = count_entries(fd.fd, map_info(fd.fd))
    assert c.entries is not None
    return c.entries


def clear_scaling(dp: SockLB) -> int:
    """Remove every Service a scaling run programs (ClusterIPs from ``service_ip(0)`` up to the
    fronting Services' block), their reverse-NAT entries and backends; the lab's own Services (kube-dns,
    the Services fronting the probe pods) stay. Returns the service entries removed."""
    first = struct.unpack("!I", lb.lb4_key(FIRST_SCALING_IP, 0)[:4])[0]
    end = int(FRONT_NET.network_address)
    removed = 0
    with dp.open_map(lb.SERVICES_MAP) as fd:
        keys = map_elems.map_keys(fd.fd, lb.KEY_SIZE[lb.SERVICES_MAP], lb.MAX_ENTRIES)
        for k in sorted(keys, key=lambda k: lb.Lb4Key.unpack(k).slot):  # frontends (slot 0) first
            if first <= struct.unpack("!I", k[:4])[0] < end:
                removed += map_elems.map_delete(fd.fd, k)
    for name, size, lo, hi in ((lb.REVNAT_MAP, 2, 1, BASE_REV_NAT), (lb.BACKENDS_MAP, 4, FIRST_BACKEND_ID, 2**32)):
        with dp.open_map(name) as fd:
            for k in map_elems.map_keys(fd.fd, size, lb.MAX_ENTRIES):
                if lo <= int.from_bytes(k, "little") < hi:
                    map_elems.map_delete(fd.fd, k)
    return removed


def program_lab_dns(dp: SockLB) -> None:
    """The lab's kube-dns Service (UDP and TCP 53 → dnsmasq) in the service map: a pod's DNS goes
    through sendmsg4/recvmsg4 (UDP) and connect4 (TCP) instead of the node's DNAT table."""
    svcs = [kubeproxy.Service(BASE_REV_NAT + k - 1, "kube-dns", labdns.KUBE_DNS_IP, 53, 53, (labdns.DNS_IP,), proto)
            for k, proto in ((1, "udp"), (2, "tcp"))]
    write(dp, lb.entries(svcs, {(labdns.DNS_IP, 53): 1}))


def drop_kube_proxy_tables(ns: str) -> list[str]:
    """kube-proxy's nat tables in a node namespace (iptables-nft's ``ip nat``, nft mode's
    ``ip kube-proxy``): with the socket LB no Service rule is walked. The lab's DNS table stays."""
    tables = netns.run(netns.nsenter_argv(ns, ["nft", "list", "tables"]), check=False).splitlines()
    gone = []
    for t in ("nat", kubeproxy.NFT_TABLE):
        if f"table ip {t}" in tables:
            netns.run(netns.nsenter_argv(ns, ["nft", "delete", "table", "ip", t]))
            gone.append(t)
    return gone


def datapath_of(lab: Lab) -> SockLB:
    """The lab's datapath: its node and pod namespaces in scope, its running processes to adopt."""
    names = [n.netns for n in lab.nodes()] + [p["netns"] for n in lab.nodes() for p in n.pods]
    pids = [p["pid"] for p in lab.status()["processes"] if p["alive"]]
    return SockLB(lab.spec.name, [str(netns.NETNS_DIR / n) for n in names], pids)


def use_ebpf(lab: Lab) -> SockLB:
    """A lab that runs on the socket-LB datapath (``lab up --datapath ebpf``): install it and
    program the lab's own Services."""
    dp = datapath_of(lab)
    dp.install()
    program_lab_dns(dp)
    return dp
