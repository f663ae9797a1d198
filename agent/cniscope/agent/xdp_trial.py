"""The explicit, opt-in XDP attach test: ``cniscope node xdp-test IFACE``.

Attaches a two-instruction ``XDP_PASS`` program to the one interface that was named — in driver
(native) mode and generic (skb) mode through netlink IFLA_XDP, and through a bpf_link — and detaches
it again, reporting each result with the kernel's error text. It never replaces a program that is
already attached (XDP_FLAGS_UPDATE_IF_NOEXIST; detach only with XDP_FLAGS_REPLACE on our own fd) and
never touches any interface other than the named one. The read-only feature report (netdev
xdp-features) is included so the two can be compared.
"""

from __future__ import annotations

from typing import Any

from cniscope.agent import netlink as nl
from cniscope.agent.bpf import syscall as sc
from cniscope.agent.bpf.syscall import BpfError
from cniscope.core.errors import NotFound, ValidationError

MODES: dict[str, int] = {"native": nl.XDP_FLAGS_DRV_MODE, "generic": nl.XDP_FLAGS_SKB_MODE, "link": 0}


def _link(name: str, netns: str | None) -> nl.Link:
    for link in nl.links(netns):
        if link.name == name:
            return link
    raise NotFound(f"no interface named {name!r}" + (f" in {netns}" if netns else ""))


def _error(exc: OSError) -> dict[str, Any]:
    return {"ok": False, "errno": exc.errno, "error": str(exc), "extack": getattr(exc, "extack", "")}


def _try_netlink(link: nl.Link, prog: sc.Fd, mode: str, netns: str | None) -> dict[str, Any]:
    flags = MODES[mode]
    try:
        nl.set_xdp(link.index, prog.fd, flags | nl.XDP_FLAGS_UPDATE_IF_NOEXIST, netns=netns)
    except nl.NetlinkError as exc:
        return _error(exc)
    res: dict[str, Any] = {"ok": True, "attached_mode": _link(link.name, netns).xdp_mode}
    try:
        nl.set_xdp(link.index, -1, flags | nl.XDP_FLAGS_REPLACE, expected_fd=prog.fd, netns=netns)
        res["detached"] = True
    except nl.NetlinkError as exc:
        res.update(detached=False, detach_error=str(exc))
    return res


def _try_link(link: nl.Link, prog: sc.Fd, netns: str | None) -> dict[str, Any]:
    try:
        with nl.in_netns(netns):
            lfd = sc.link_create(prog.fd, link.index, sc.ATTACH_BPF_XDP)
    except BpfError as exc:
        return _error(exc)
    with lfd:
        res: dict[str, Any] = {"ok": True, "attached_mode": _link(link.name, netns).xdp_mode}
        try:
            sc.link_detach(lfd.fd)
            res["detached"] = True
        except BpfError as exc:
            res.update(detached=False, detach_error=str(exc))
    return res


def run_xdp_test(iface: str, modes: list[str], *, netns: str | None = None) -> dict[str, Any]:
    """Attach/detach XDP_PASS on ``iface`` in each of ``modes`` (native, generic, link); see module doc."""
    modes = modes or list(MODES)
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ValidationError(f"unknown XDP mode(s) {', '.join(bad)}; choose from {', '.join(MODES)}")
    link = _link(iface, netns)
    try:
        feats = nl.xdp_features(netns).get(link.index)
        read_only: dict[str, Any] = {"native": feats.native if feats else None,
                                     "features": feats.names if feats else []}
    except (OSError, LookupError) as exc:
        read_only = {"native": None, "features": [], "error": str(exc)}
    kind = link.kind or ("loopback" if link.arptype == nl.ARPHRD_LOOPBACK else "physical")
    out: dict[str, Any] = {"interface": iface, "ifindex": link.index, "kind": kind,
                           "read_only": read_only, "results": {}}
    if link.xdp_mode != "none":
        out["refused"] = f"{iface} already has an XDP program attached ({link.xdp_mode}, " \
                         f"ids {link.xdp_prog_ids}); nothing was attached"
        return out
    with sc.prog_load_xdp_pass() as prog:
        for mode in modes:
            out["results"][mode] = _try_link(link, prog, netns) if mode == "link" \
                else _try_netlink(link, prog, mode, netns)
    native = out["results"].get("native")
    if native is not None and read_only["native"] is not None:
        out["agrees"] = bool(native["ok"]) == bool(read_only["native"])
    out["left_attached"] = _link(iface, netns).xdp_mode
    return out
