"""The Services that front the agents' probe pods in a lab, so a suite can go pod → ClusterIP.

``lab up`` programs one Service per node (ClusterIP ``198.18.127.<i>``) whose endpoint is that node's
probe pod, on the two ports the agents serve light probes on: the accept-and-close port (``connect``)
and the HTTP echo port next to it (``http``); and, with ``--services N``, N filler Services over the
lab's pods, so the datapath holds as many Services as a cluster would. Both go into the datapath the
lab runs on:

* ``kube-proxy``: kube-proxy's iptables-mode nat table (iptables-nft) in every node namespace, the
  fillers first and the fronts last in ``KUBE-SERVICES``, so a connect to a front walks every filler's
  match first (the worst case, as ``bench services`` measures its last Service);
* ``ebpf``: the socket LB's Cilium-shaped maps, the fronts as the lab's own Services (kept by a
  ``bench services`` run), the fillers as a scaling run's.

What was programmed is kept in the lab's state; the collector serving the lab reads it for the
suites' ``service`` path items (:func:`fronts_source`). A ``bench services`` run replaces the fillers
and leaves the fronts (:func:`after_scaling`). ICMP to a ClusterIP is translated by neither datapath, so the service
path has no RTT item.
"""

from __future__ import annotations

from typing import Any

from cniscope.collector.runs.service_fronts import Fronts, FrontsSource
from cniscope.core.errors import ValidationError
from cniscope.lab import kubeproxy
from cniscope.lab.addressing import front_ip
from cniscope.lab.lab import Lab
from cniscope.lab.socklb import cilium_lb as lb
from cniscope.lab.socklb import ebpf_services as ebpf

TARGET_PORT = 7411             # the agents' accept-and-close port (AgentConfig.target_port); HTTP echo on +1
PORTS = (("connect", TARGET_PORT), ("http", TARGET_PORT + 1))
MAX_FILLERS = 5000
KUBE_PROXY: kubeproxy.Backend = "iptables-nft"    # the rules of a lab up on the kube-proxy datapath
FIRST_FRONT_INDEX = ebpf.BASE_REV_NAT + 2   # after kube-dns UDP and TCP: reverse-NAT indices of their own
FIRST_FRONT_BACKEND = 2                     # kube-dns's backend is 1; a scaling run's start at 1000
DATAPATHS = {KUBE_PROXY: "kube-proxy iptables-nft NAT rules", ebpf.EBPF: "eBPF socket LB"}


def front_services(lab: Lab) -> list[kubeproxy.Service]:
    """Per node, one Service per probe port, its endpoint that node's probe pod."""
    out = []
    for node in lab.nodes():
        for k, (port_name, port) in enumerate(PORTS):
            index = FIRST_FRONT_INDEX + len(PORTS) * (node.index - 1) + k
            out.append(kubeproxy.Service(index, f"probe-{node.name}-{port_name}", front_ip(node.index), port, port,
                                         (node.pod_ip,)))
    return out


def filler_services(lab: Lab, n: int) -> list[kubeproxy.Service]:
    """``n`` Services over the lab's pods (up to three endpoints each), as a scaling run plans them."""
    if not 0 <= n <= MAX_FILLERS:
        raise ValidationError(f"filler Services must be 0..{MAX_FILLERS}, got {n}")
    pods = list(dict.fromkeys(p["ip"] for node in lab.nodes() for p in node.pods))
    return kubeproxy.plan(n, pods, per_service=min(3, len(pods)), port=TARGET_PORT, target_port=TARGET_PORT)


def program(lab: Lab, datapath: str, fillers: int = 0) -> dict[str, Any]:
    """Program the fronts and ``fillers`` filler Services into the lab's ``datapath`` (``iptables-nft``
    rules in every node namespace, or ``ebpf``: the installed socket LB's maps) and record them."""
    fronts, fill = front_services(lab), filler_services(lab, fillers)
    if datapath == ebpf.EBPF:
        dp = ebpf.datapath_of(lab)
        ids = {(s.endpoints[0], s.target_port): FIRST_FRONT_BACKEND + k for k, s in enumerate(fronts)}
        ebpf.write(dp, lb.entries(fronts, ids))
        if fill:
            pods = [p["ip"] for node in lab.nodes() for p in node.pods]
            ebpf.write(dp, lb.entries(fill, ebpf.scaling_ids(pods, TARGET_PORT)))
    elif datapath == KUBE_PROXY:
        for node in lab.nodes():
            kubeproxy.load(node.netns, fill + fronts, KUBE_PROXY)
    else:
        raise ValidationError(f"datapath must be one of {', '.join(DATAPATHS)}, got {datapath!r}")
    rec = {"datapath": datapath, "fillers": fillers, "fronts": {n.name: front_ip(n.index) for n in lab.nodes()}}
    lab.record_services(rec)
    return rec


def switch(lab: Lab, datapath: str, fillers: int = 0) -> dict[str, Any]:
    """Move a running lab's Services to ``datapath`` (``iptables-nft`` or ``ebpf``) and program them
    there: to ``ebpf`` the socket LB is installed (kube-dns with it) and kube-proxy's tables leave the
    node namespaces; to ``iptables-nft`` the socket LB is removed. Agents and collector keep running,
    so runs on both datapaths land in one store and compare side by side."""
    if datapath == ebpf.EBPF:
        ebpf.use_ebpf(lab)
        for node in lab.nodes():
            ebpf.drop_kube_proxy_tables(node.netns)
    elif datapath == KUBE_PROXY:
        dp = ebpf.datapath_of(lab)
        if dp.installed():
            dp.uninstall()
    return program(lab, datapath, fillers)


def kept_services(lab: Lab, backend: str) -> list[kubeproxy.Service]:
    """The fronts a ``backend`` scaling run must keep in the rules it replaces: the lab's own on its
    kube-proxy datapath, none for another rule flavour."""
    rec = lab.services()
    return front_services(lab) if rec.get("datapath") == backend == KUBE_PROXY else []


def after_scaling(lab: Lab, backend: str) -> None:
    """After a ``bench services`` run with ``backend`` on this lab: the run replaced the fillers of
    the datapath the lab runs on (recorded as 0 now), and a socket-LB run on a kube-proxy lab dropped
    kube-proxy's tables, so the fronts' rules are loaded again."""
    rec = lab.services()
    if not rec:
        return
    if rec.get("datapath") == KUBE_PROXY and backend == ebpf.EBPF:
        program(lab, KUBE_PROXY, 0)
    elif rec.get("datapath") == backend and rec.get("fillers"):
        lab.record_services({**rec, "fillers": 0})


def fronts_source(lab_name: str) -> FrontsSource:
    """What the collector serving ``lab_name`` asks when a run has service-path items: the lab's
    fronts as last programmed, read afresh each time (None when the lab programmed none)."""

    def read() -> Fronts | None:
        rec = Lab.existing(lab_name).services()
        if not rec.get("fronts"):
            return None
        return Fronts(dict(rec["fronts"]), int(rec.get("fillers", 0)),
                      DATAPATHS.get(str(rec.get("datapath")), str(rec.get("datapath"))))

    return read
