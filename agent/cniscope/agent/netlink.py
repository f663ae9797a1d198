"""Raw netlink for the few messages cniscope needs: rtnetlink link dump and IFLA_XDP set, the
``netdev`` generic-netlink family's device dump (xdp-features), and the nftables table list.
Errors carry the kernel's extack text.

Sockets are opened in the caller's network namespace, or in ``netns`` (a /run/netns/NAME path) by
switching the calling thread only for the duration of :func:`in_netns`.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

NETLINK_ROUTE, NETLINK_NETFILTER, NETLINK_GENERIC = 0, 12, 16
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_DUMP = 1, 2, 4, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
SOL_NETLINK, NETLINK_CAP_ACK, NETLINK_EXT_ACK = 270, 10, 11
NLMSGERR_ATTR_MSG = 1
NLA_F_NESTED = 1 << 15
RTM_NEWLINK, RTM_GETLINK, RTM_SETLINK = 16, 18, 19
IFLA_IFNAME, IFLA_MTU, IFLA_OPERSTATE, IFLA_LINKINFO = 3, 4, 16, 18
IFLA_NUM_TX_QUEUES, IFLA_NUM_RX_QUEUES, IFLA_XDP = 31, 32, 43
IFLA_INFO_KIND = 1
IFLA_XDP_FD, IFLA_XDP_ATTACHED, IFLA_XDP_FLAGS, IFLA_XDP_PROG_ID = 1, 2, 3, 4
IFLA_XDP_DRV_PROG_ID, IFLA_XDP_SKB_PROG_ID, IFLA_XDP_HW_PROG_ID, IFLA_XDP_EXPECTED_FD = 5, 6, 7, 8
XDP_FLAGS_UPDATE_IF_NOEXIST, XDP_FLAGS_SKB_MODE, XDP_FLAGS_DRV_MODE, XDP_FLAGS_REPLACE = 1, 2, 4, 16
XDP_ATTACHED = {0: "none", 1: "native", 2: "generic", 3: "offload", 4: "multi"}
ARPHRD_LOOPBACK = 772
GENL_ID_CTRL, CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME = 16, 3, 1, 2
NETDEV_CMD_DEV_GET = 1
NETDEV_A_DEV_IFINDEX, NETDEV_A_DEV_XDP_FEATURES, NETDEV_A_DEV_XDP_ZC_MAX_SEGS = 1, 3, 4
NETDEV_A_DEV_XDP_RX_METADATA_FEATURES = 5
XDP_FEATURE_BITS = ["basic", "redirect", "ndo-xmit", "xsk-zerocopy", "hw-offload", "rx-sg", "ndo-xmit-sg"]
NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWTABLE, NFT_MSG_GETTABLE, NFTA_TABLE_NAME = 10, 0, 1, 1
CLONE_NEWNET = 0x40000000


class NetlinkError(OSError):
    """A netlink request was refused; ``extack`` is the kernel's explanation when it gave one."""

    def __init__(self, err: int, extack: str, what: str) -> None:
        super().__init__(err, f"{what}: {os.strerror(err)}" + (f" ({extack})" if extack else ""))
        self.extack = extack


_libc = ctypes.CDLL(None, use_errno=True)


@contextmanager
def in_netns(path: str | None) -> Iterator[None]:
    """Run the block with the calling thread in the network namespace at ``path`` (None: stay)."""
    if path is None:
        yield
        return
    cur = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        tgt = os.open(path, os.O_RDONLY)
        try:
            if _libc.setns(tgt, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns({path})")
        finally:
            os.close(tgt)
        try:
            yield
        finally:
            if _libc.setns(cur, CLONE_NEWNET) != 0:  # pragma: no cover - would leave the thread astray
                raise OSError(ctypes.get_errno(), "setns(back)")
    finally:
        os.close(cur)


def attr(kind: int, payload: bytes) -> bytes:
    ln = 4 + len(payload)
    return struct.pack("HH", ln, kind) + payload + b"\0" * ((4 - ln % 4) % 4)


def parse_attrs(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    off = 0
    while off + 4 <= len(data):
        ln, kind = struct.unpack_from("HH", data, off)
        if ln < 4 or off + ln > len(data):
            break
        out[kind & ~NLA_F_NESTED & 0x7FFF] = data[off + 4: off + ln]
        off += (ln + 3) & ~3
    return out


def parse_error(payload: bytes, flags: int) -> tuple[int, str]:
    """(errno, extack message) of an NLMSG_ERROR payload sent with NETLINK_CAP_ACK on."""
    err = -struct.unpack_from("i", payload)[0]
    msg = ""
    if flags & 0x200 and len(payload) > 20:  # NLM_F_ACK_TLVS: TLVs after errno + echoed header
        tl = parse_attrs(payload[20:])
        msg = tl.get(NLMSGERR_ATTR_MSG, b"").rstrip(b"\0").decode(errors="replace")
    return err, msg


class Netlink:
    def __init__(self, proto: int) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, proto)
        for opt in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):
            try:
                self.sock.setsockopt(SOL_NETLINK, opt, 1)
            except OSError:
                pass
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, mtype: int, flags: int, body: bytes, what: str) -> list[tuple[int, bytes]]:
        self.seq += 1
        self.sock.send(struct.pack("IHHII", 16 + len(body), mtype, flags | NLM_F_REQUEST, self.seq, 0) + body)
        out: list[tuple[int, bytes]] = []
        while True:
            data = self.sock.recv(1 << 16)
            off = 0
            while off + 16 <= len(data):
                ln, t, fl, seq, _ = struct.unpack_from("IHHII", data, off)
                payload = data[off + 16: off + ln]
                off += (ln + 3) & ~3
                if seq != self.seq:
                    continue
                if t == NLMSG_ERROR:
                    err, msg = parse_error(payload, fl)
                    if err:
                        raise NetlinkError(err, msg, what)
                    return out
                if t == NLMSG_DONE:
                    return out
                out.append((t, payload))
                if not fl & NLM_F_MULTI and not flags & (NLM_F_ACK | NLM_F_DUMP):
                    return out


# --- rtnetlink ----------------------------------------------------------------------------------------

@dataclass
class Link:
    index: int
    name: str
    kind: str | None
    arptype: int
    flags: int
    mtu: int
    tx_queues: int | None
    rx_queues: int | None
    xdp_mode: str = "none"
    xdp_prog_ids: dict[str, int] = field(default_factory=dict)

    @property
    def virtual(self) -> bool:
        return self.kind is not None or self.arptype == ARPHRD_LOOPBACK


def _u32(b: bytes | None) -> int | None:
    return struct.unpack("I", b[:4])[0] if b and len(b) >= 4 else None


def _str(b: bytes | None) -> str:
    return (b or b"").split(b"\0", 1)[0].decode(errors="replace")


def parse_link(payload: bytes) -> Link:
    _, arptype, index, flags, _ = struct.unpack_from("BxHiII", payload)
    a = parse_attrs(payload[16:])
    kind = _str(parse_attrs(a[IFLA_LINKINFO]).get(IFLA_INFO_KIND)) if IFLA_LINKINFO in a else None
    link = Link(index, _str(a.get(IFLA_IFNAME)), kind or None, arptype, flags, _u32(a.get(IFLA_MTU)) or 0,
                _u32(a.get(IFLA_NUM_TX_QUEUES)), _u32(a.get(IFLA_NUM_RX_QUEUES)))
    if IFLA_XDP in a:
        x = parse_attrs(a[IFLA_XDP])
        link.xdp_mode = XDP_ATTACHED.get(x.get(IFLA_XDP_ATTACHED, b"\0")[0], "unknown")
        for key, name in ((IFLA_XDP_DRV_PROG_ID, "native"), (IFLA_XDP_SKB_PROG_ID, "generic"),
                          (IFLA_XDP_HW_PROG_ID, "offload")):
            if key in x:
                link.xdp_prog_ids[name] = _u32(x[key]) or 0
        if not link.xdp_prog_ids and IFLA_XDP_PROG_ID in x and link.xdp_mode != "none":
            link.xdp_prog_ids[link.xdp_mode] = _u32(x[IFLA_XDP_PROG_ID]) or 0
    return link


def links(netns: str | None = None) -> list[Link]:
    with in_netns(netns), Netlink(NETLINK_ROUTE) as nl:
        body = struct.pack("BxHiII", socket.AF_UNSPEC, 0, 0, 0, 0)
        return [parse_link(p) for t, p in nl.request(RTM_GETLINK, NLM_F_DUMP, body, "RTM_GETLINK")
                if t == RTM_NEWLINK]


def set_xdp(ifindex: int, fd: int, flags: int, expected_fd: int | None = None, netns: str | None = None) -> None:
    """Attach (fd >= 0) or detach (fd == -1) an XDP program through IFLA_XDP; NetlinkError on refusal."""
    inner = attr(IFLA_XDP_FD, struct.pack("i", fd)) + attr(IFLA_XDP_FLAGS, struct.pack("I", flags))
    if expected_fd is not None:
        inner += attr(IFLA_XDP_EXPECTED_FD, struct.pack("i", expected_fd))
    body = struct.pack("BxHiII", socket.AF_UNSPEC, 0, ifindex, 0, 0) + attr(IFLA_XDP | NLA_F_NESTED, inner)
    with in_netns(netns), Netlink(NETLINK_ROUTE) as nl:
        nl.request(RTM_SETLINK, NLM_F_ACK, body, "RTM_SETLINK IFLA_XDP")


# --- generic netlink: netdev family ---------------------------------------------------------------------

def _genl(cmd: int, version: int = 1) -> bytes:
    return struct.pack("BBH", cmd, version, 0)


def family_id(nl: Netlink, name: str) -> int:
    body = _genl(CTRL_CMD_GETFAMILY) + attr(CTRL_ATTR_FAMILY_NAME, name.encode() + b"\0")
    try:
        msgs = nl.request(GENL_ID_CTRL, 0, body, f"genl family {name}")
    except NetlinkError as exc:
        if exc.errno == errno.ENOENT:
            raise LookupError(f"generic netlink family {name!r} not in this kernel") from None
        raise
    a = parse_attrs(msgs[0][1][4:])
    return int(struct.unpack("H", a[CTRL_ATTR_FAMILY_ID][:2])[0])


@dataclass(frozen=True)
class XdpFeatures:
    ifindex: int
    bits: int
    zc_max_segs: int | None
    rx_metadata: int | None

    @property
    def names(self) -> list[str]:
        return decode_xdp_features(self.bits)

    @property
    def native(self) -> bool:
        return bool(self.bits & 1)


def decode_xdp_features(bits: int) -> list[str]:
    names = [n for i, n in enumerate(XDP_FEATURE_BITS) if bits & (1 << i)]
    extra = bits & ~((1 << len(XDP_FEATURE_BITS)) - 1)
    return names + ([f"0x{extra:x}"] if extra else [])


def parse_dev(payload: bytes) -> XdpFeatures:
    a = parse_attrs(payload[4:])
    feats = a.get(NETDEV_A_DEV_XDP_FEATURES, b"")
    rx = a.get(NETDEV_A_DEV_XDP_RX_METADATA_FEATURES)
    return XdpFeatures(ifindex=_u32(a.get(NETDEV_A_DEV_IFINDEX)) or 0,
                       bits=struct.unpack("Q", feats[:8])[0] if len(feats) >= 8 else 0,
                       zc_max_segs=_u32(a.get(NETDEV_A_DEV_XDP_ZC_MAX_SEGS)),
                       rx_metadata=struct.unpack("Q", rx[:8])[0] if rx and len(rx) >= 8 else None)


def xdp_features(netns: str | None = None) -> dict[int, XdpFeatures]:
    """ifindex → advertised XDP features, from NETDEV_CMD_DEV_GET (read-only: attaches nothing)."""
    with in_netns(netns), Netlink(NETLINK_GENERIC) as nl:
        fam = family_id(nl, "netdev")
        msgs = nl.request(fam, NLM_F_DUMP, _genl(NETDEV_CMD_DEV_GET), "netdev dev-get")
        return {f.ifindex: f for f in (parse_dev(p) for t, p in msgs if t == fam)}


# --- nfnetlink: nftables ---------------------------------------------------------------------------------

def nft_tables(netns: str | None = None) -> list[tuple[int, str]]:
    """(NFPROTO family number, table name) of every nftables table, from one NFT_MSG_GETTABLE dump."""
    newtable = NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWTABLE
    body = struct.pack("BBH", socket.AF_UNSPEC, 0, 0)  # nfgenmsg: every family, NFNETLINK_V0
    with in_netns(netns), Netlink(NETLINK_NETFILTER) as nl:
        msgs = nl.request(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETTABLE, NLM_F_DUMP, body, "NFT_MSG_GETTABLE")
    return [(p[0], _str(parse_attrs(p[4:]).get(NFTA_TABLE_NAME))) for t, p in msgs if t == newtable and len(p) >= 4]
