"""NIC / XDP: per interface driver, version, firmware, MTU, queues, speed, offloads, attached XDP
program and mode, and native XDP support from the kernel's ``netdev`` xdp-features (read-only)."""

from __future__ import annotations

import socket
from typing import Any

from cniscope.agent import ethtool
from cniscope.agent import netlink as nl
from cniscope.agent.inspectors.unit import NOT_READY, READY, UNKNOWN, UnitResult
from cniscope.core.errors import Unavailable
from cniscope.core.hostpaths import HostPaths


def _kind(link: nl.Link) -> str:
    return link.kind or ("loopback" if link.arptype == nl.ARPHRD_LOOPBACK else "physical")


def describe(link: nl.Link, sock: socket.socket, feats: nl.XdpFeatures | None,
             features_error: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {"name": link.name, "ifindex": link.index, "kind": _kind(link), "mtu": link.mtu,
                           "up": bool(link.flags & 1), "tx_queues": link.tx_queues, "rx_queues": link.rx_queues,
                           "xdp_mode": link.xdp_mode, "xdp_prog_ids": link.xdp_prog_ids}
    try:
        d = ethtool.drvinfo(sock, link.name)
        na = ("", "N/A")
        row.update(driver=d.driver, version=d.version, firmware=None if d.firmware in na else d.firmware,
                   bus=None if d.bus in na else d.bus)
    except OSError as exc:
        row.update(driver=None, driver_error=exc.strerror)
    try:
        ch = ethtool.channels(sock, link.name)
        row["channels"] = {k: v for k, v in ch.items() if v}
    except OSError:
        pass
    if link.virtual:
        row["speed"] = "virtual"
    else:
        try:
            mbps = ethtool.speed_mbps(sock, link.name)
            row["speed"] = f"{mbps}Mb/s" if mbps else "unknown"
        except OSError as exc:
            row["speed"] = f"unknown ({exc.strerror})"
    row["offloads"] = ethtool.offloads(sock, link.name)
    if feats is not None:
        row.update(xdp_native=feats.native, xdp_features=feats.names)
    else:
        row.update(xdp_native=None, xdp_features=[], xdp_features_error=features_error or "not reported")
    return row


def nic_report(netns: str | None = None) -> list[dict[str, Any]]:
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


def inspect_nic(paths: HostPaths) -> UnitResult:
    res = UnitResult()
    rows = nic_report()
    res.detail = {"interfaces": rows}
    phys = [r for r in rows if r["kind"] == "physical"]
    native = [r["name"] for r in phys if r.get("xdp_native")]
    if not phys:
        res.item("xdp_native", UNKNOWN, "no physical interface in this network namespace")
    elif native:
        res.item("xdp_native", READY, f"native XDP advertised by {', '.join(native)} "
                 f"({', '.join(sorted({str(r.get('driver')) for r in phys if r['name'] in native}))})")
    elif all(r.get("xdp_native") is None for r in phys):
        res.item("xdp_native", UNKNOWN, "kernel does not report xdp-features (netdev genetlink)")
    else:
        drivers = ", ".join(f"{r['name']}={r.get('driver')}" for r in phys)
        res.item("xdp_native", NOT_READY, f"no physical interface advertises native XDP ({drivers})")
    return res
