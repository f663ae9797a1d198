"""NIC / XDP: per interface driver, version, firmware, MTU, queues, speed, offloads, attached XDP
program and mode, and native XDP support from the kernel's ``netdev`` xdp-features (read-only)."""

from __future__ import annotations

import socket

from cniscope.agent import ethtool
from cniscope.agent import netlink as nl
from cniscope.agent.inspectors.unit import NOT_READY, READY, UNKNOWN, UnitResult, count
from cniscope.api.v1 import capabilities_pb2 as cap
from cniscope.core.errors import Unavailable
from cniscope.core.hostpaths import HostPaths

NA = ("", "N/A")


def _kind(link: nl.Link) -> str:
    return link.kind or ("loopback" if link.arptype == nl.ARPHRD_LOOPBACK else "physical")


def describe(link: nl.Link, sock: socket.socket, feats: nl.XdpFeatures | None,
             features_error: str | None) -> cap.NicInterface:
    row = cap.NicInterface(name=link.name, ifindex=link.index, kind=_kind(link), mtu=link.mtu,
                           up=bool(link.flags & 1), tx_queues=link.tx_queues or 0, rx_queues=link.rx_queues or 0,
                           xdp_mode=link.xdp_mode, xdp_prog_ids=link.xdp_prog_ids, virtual=link.virtual)
    try:
        d = ethtool.drvinfo(sock, link.name)
        row.driver, row.version = d.driver, d.version
        row.firmware = "" if d.firmware in NA else d.firmware
        row.bus = "" if d.bus in NA else d.bus
    except OSError as exc:
        row.driver_error = exc.strerror or str(exc)
    try:
        row.channels.update({k: v for k, v in ethtool.channels(sock, link.name).items() if v})
    except OSError:
        pass
    if not link.virtual:
        try:
            mbps = ethtool.speed_mbps(sock, link.name)
            if mbps:
                row.speed_mbps = mbps
            else:
                row.speed_error = "the driver reports no speed"
        except OSError as exc:
            row.speed_error = exc.strerror or str(exc)
    row.offloads.update({k: v for k, v in ethtool.offloads(sock, link.name).items() if v is not None})
    if feats is not None:
        row.xdp_native = feats.native
        row.xdp_features.extend(feats.names)
    else:
        row.xdp_features_error = features_error or "not reported"
    return row


def nic_report(netns: str | None = None) -> list[cap.NicInterface]:
    """Every interface of the (current or given) network namespace; attaches nothing."""
    with nl.in_netns(netns):
        try:
            links = nl.links()
        except OSError as exc:
            raise Unavailable(f"rtnetlink link dump refused: {exc}") from exc
        feats: dict[int, nl.XdpFeatures] = {}
        ferr: str | None = None
        try:
            feats = nl.xdp_features()
        except (OSError, LookupError) as exc:
            ferr = str(exc)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            return [describe(link, sock, feats.get(link.index), ferr) for link in links]


def _physical(r: cap.NicInterface) -> str:
    speed = f"{r.speed_mbps:,} Mb/s" if r.HasField("speed_mbps") else "speed unknown"
    return f"{r.name} ({r.driver or '?'}, {speed})"


def summarize(d: cap.NicDetail) -> str:
    """``3 interfaces, physical: ens5 (ena, 12,500 Mb/s); native XDP on ens5; XDP attached: ens5 native``."""
    ifs = list(d.interfaces)
    phys = [r for r in ifs if r.kind == "physical"]
    parts = [count(len(ifs), "interface") + (", physical: " + ", ".join(map(_physical, phys)) if phys
                                             else ", none physical")]
    native = [r.name for r in ifs if r.HasField("xdp_native") and r.xdp_native]
    if native:
        parts.append("native XDP on " + ", ".join(native))
    elif all(not r.HasField("xdp_native") for r in ifs):
        parts.append("xdp-features not reported")
    else:
        parts.append("no native XDP")
    attached = [f"{r.name} {r.xdp_mode}" for r in ifs if r.xdp_mode not in ("", "none")]
    if attached:
        parts.append("XDP attached: " + ", ".join(attached))
    return "; ".join(parts)


def inspect_nic(paths: HostPaths) -> UnitResult:
    d = cap.NicDetail(interfaces=nic_report())
    res = UnitResult(d, summarize(d))
    phys = [r for r in d.interfaces if r.kind == "physical"]
    native = [r for r in phys if r.HasField("xdp_native") and r.xdp_native]
    if not phys:
        res.item("xdp_native", UNKNOWN, "no physical interface in this network namespace")
    elif native:
        res.item("xdp_native", READY, f"native XDP advertised by {', '.join(r.name for r in native)} "
                 f"({', '.join(sorted({r.driver or 'None' for r in native}))})")
    elif all(not r.HasField("xdp_native") for r in phys):
        res.item("xdp_native", UNKNOWN, "kernel does not report xdp-features (netdev genetlink)")
    else:
        drivers = ", ".join(f"{r.name}={r.driver or None}" for r in phys)
        res.item("xdp_native", NOT_READY, f"no physical interface advertises native XDP ({drivers})")
    return res
