"""kube-proxy-shaped Service rules in every node namespace of a lab: the lab's service-scaling
backends.

:class:`LabServices` implements the collector's ``ServiceBackend``: it writes kube-proxy's
iptables-mode ruleset (iptables-nft or iptables-legacy, a full restore per step, as kube-proxy
syncs) or its nftables verdict-map table (loaded incrementally) into **every** node namespace, so
traffic from a pod to a ClusterIP really walks the rules. :func:`lab_backends` is the registry the
``cniscope collector --lab NAME`` command gives the collector: one factory per rule flavour, in
:data:`kubeproxy.BACKENDS` order, and the socket-LB datapath ``ebpf`` (the first is what ``auto``
picks in a lab).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from cniscope.collector.runs.service_backend import Applied, LabBackends, ServiceBackend
from cniscope.core.errors import ValidationError
from cniscope.lab import kubeproxy, lab_fronts, netns
from cniscope.lab.lab import Lab
from cniscope.lab.socklb.ebpf_services import EBPF, EbpfServices
from cniscope.lab.socklb.sock_lb import SockLB

LAB_PROXY_NOTE = "does not apply: no kube-proxy in the lab (cniscope loads its ruleset; see the load time)"
SERVICE_PORT = 7411  # the agents' accept-and-close port: the endpoints really answer


@dataclass
class LabServices:
    """kube-proxy-shaped rules in every node namespace of a lab."""

    node_netns: list[str]
    endpoints: list[str]
    backend: str = "iptables-nft"
    keep: list[kubeproxy.Service] = field(default_factory=list)   # the lab's own Services in these rules
    on_cleanup: Callable[[], None] | None = None                   # the lab's record of its Services
    name: str = field(init=False)
    _loaded: int = 0

    def __post_init__(self) -> None:
        if self.backend not in kubeproxy.BACKENDS:
            raise ValidationError(f"backend must be one of {', '.join(kubeproxy.BACKENDS)}, got {self.backend!r}")
        self.name = self.backend

    @classmethod
    def of_lab(cls, lab: Lab, backend: str) -> LabServices:
        nodes = lab.nodes()
        return cls([n.netns for n in nodes], [p["ip"] for n in nodes for p in n.pods], backend,
                   lab_fronts.kept_services(lab, backend), lambda: lab_fronts.after_scaling(lab, backend))

    def _plan(self, n: int, first: int = 0) -> list[kubeproxy.Service]:
        return kubeproxy.plan(n, self.endpoints, port=SERVICE_PORT, target_port=SERVICE_PORT, first=first)

    def prepare(self) -> None:
        self.cleanup()

    def apply(self, n: int) -> Applied:
        if n < 1:
            raise ValidationError("a scaling step needs at least one Service")
        slowest = 0.0
        for ns in self.node_netns:
            t0 = time.perf_counter()
            if self.backend == "nft" and 0 < self._loaded < n:
                kubeproxy.add_nft(ns, self._plan(n - self._loaded, first=self._loaded))
            else:
                # the lab's own first: the run's last Service stays the end of KUBE-SERVICES
                kubeproxy.load(ns, self.keep + self._plan(n), self.backend)  # type: ignore[arg-type]
            slowest = max(slowest, time.perf_counter() - t0)
        self._loaded = n
        last, head = self._plan(1, first=n - 1)[0], self._plan(1)[0]
        return Applied(last.cluster_ip, SERVICE_PORT, {ns: count_rules(ns, self.backend) for ns in self.node_netns},
                       slowest, head.cluster_ip, proxy_note=LAB_PROXY_NOTE)

    def cleanup(self) -> None:
        for ns in self.node_netns:
            try:
                if self.keep:
                    kubeproxy.load(ns, self.keep, self.backend)  # type: ignore[arg-type]
                else:
                    kubeproxy.flush(ns, self.backend)  # type: ignore[arg-type]
            except Exception:  # a node namespace already gone has nothing left to clean
                continue
        self._loaded = 0
        if self.on_cleanup is not None:
            self.on_cleanup()


def count_rules(ns: str, backend: str) -> int:
    """NAT rules as the kernel holds them: ``-A`` lines of the nat table, or rules of kube-proxy's
    nft table."""
    if backend == "nft":
        out = netns.run(netns.nsenter_argv(ns, ["nft", "-j", "list", "table", "ip", kubeproxy.NFT_TABLE]))
        return sum(1 for o in json.loads(out).get("nftables", []) if "rule" in o)
    tool = {"iptables-nft": "iptables-nft-save", "iptables-legacy": "iptables-legacy-save"}[backend]
    out = netns.run(netns.nsenter_argv(ns, [tool, "-t", "nat"]))
    return sum(1 for line in out.splitlines() if line.startswith("-A "))


def lab_backends(default_lab: str = "") -> LabBackends:
    """One factory per rule flavour and ``ebpf`` (the socket-LB datapath, :mod:`.socklb`); a factory
    takes the lab a request names ("" = ``default_lab``) and reads that lab's nodes and pods as it
    was built. ``ebpf`` comes first (what ``auto`` picks) while the lab runs on it (``lab up --datapath
    ebpf``, ``lab datapath ebpf``), last otherwise."""

    def factory(backend: str) -> Callable[[str], ServiceBackend]:
        return lambda lab_name: LabServices.of_lab(Lab.existing(lab_name or default_lab), backend)

    def ebpf(lab_name: str) -> ServiceBackend:
        lab = Lab.existing(lab_name or default_lab)
        svc = EbpfServices.of_lab(lab, SERVICE_PORT)
        svc.on_cleanup = lambda: lab_fronts.after_scaling(lab, EBPF)
        return svc

    rules: dict[str, Callable[[str], ServiceBackend]] = {b: factory(b) for b in kubeproxy.BACKENDS}
    return _DatapathFirst({**rules, EBPF: ebpf}, lambda: SockLB(Lab.existing(default_lab).spec.name).installed())


class _DatapathFirst(Mapping[str, Callable[[str], ServiceBackend]]):
    """The backends with ``ebpf`` first while the lab runs on the socket LB, decided on every look
    (``lab datapath`` moves a running lab's Services while its collector keeps serving)."""

    def __init__(self, backends: dict[str, Callable[[str], ServiceBackend]], on_ebpf: Callable[[], bool]) -> None:
        self._backends, self._on_ebpf = backends, on_ebpf

    def __getitem__(self, name: str) -> Callable[[str], ServiceBackend]:
        return self._backends[name]

    def __len__(self) -> int:
        return len(self._backends)

    def __iter__(self) -> Iterator[str]:
        names = list(self._backends)
        return iter(sorted(names, key=lambda n: n != EBPF) if self._on_ebpf() else names)
