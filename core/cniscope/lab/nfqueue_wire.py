"""nfnetlink_queue on the wire: the netlink messages a queue listener sends (bind, configure,
verdicts) and parses (queued packets, acks, errors), and the kernel's table of bound queues. Pure
functions over bytes and text; tested without a kernel."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# ---- netlink / nfnetlink_queue constants (linux/netlink.h, linux/netfilter/nfnetlink_queue.h) ----
NETLINK_NETFILTER = 12
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQNL_MSG_VERDICT_BATCH = 3
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_TIMESTAMP = 4
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQA_CFG_MASK = 4
NFQA_CFG_FLAGS = 5
NFQNL_CFG_CMD_BIND = 1
NFQNL_CFG_CMD_UNBIND = 2
NFQNL_COPY_META = 1
NFQA_CFG_F_FAIL_OPEN = 0x1
NFQA_CFG_F_GSO = 0x4
NF_ACCEPT = 1
NFNETLINK_V0 = 0
NETLINK_NO_ENOBUFS = 5
SOL_NETLINK = 270

NLMSGHDR = struct.Struct("=IHHII")   # len, type, flags, seq, pid (host order)
_NFGENMSG = struct.Struct("!BBH")      # family, version, res_id (big endian)
_NLATTR = struct.Struct("=HH")         # len, type (host order)


class NetlinkError(Exception):
    """The kernel answered a request with an error (errno in ``code``)."""

    def __init__(self, code: int, what: str) -> None:
        super().__init__(f"{what}: {os.strerror(code)} (errno {code})")
        self.code = code


# ---- message building / parsing (pure, tested on bytes) ------------------------------------------
def _align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, payload: bytes) -> bytes:
    length = _NLATTR.size + len(payload)
    return _NLATTR.pack(length, kind) + payload + b"\0" * (_align(length) - length)


def message(msg_type: int, queue: int, attrs: bytes, *, seq: int, flags: int = NLM_F_REQUEST,
            family: int = socket.AF_UNSPEC) -> bytes:
    """One nfnetlink message to the queue subsystem: nlmsghdr + nfgenmsg + attributes."""
    body = _NFGENMSG.pack(family, NFNETLINK_V0, queue) + attrs
    kind = (NFNL_SUBSYS_QUEUE << 8) | msg_type
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), kind, flags, seq, 0) + body


def config_bind(queue: int, seq: int) -> bytes:
    return message(NFQNL_MSG_CONFIG, queue,
                   attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, socket.AF_INET)),
                   seq=seq, flags=NLM_F_REQUEST | NLM_F_ACK)


def config_unbind(queue: int, seq: int) -> bytes:
    return message(NFQNL_MSG_CONFIG, queue,
                   attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_UNBIND, socket.AF_INET)),
                   seq=seq, flags=NLM_F_REQUEST | NLM_F_ACK)


def config_params(queue: int, seq: int, *, maxlen: int) -> bytes:
    """Metadata only (no payload copy), queue length bound, fail-open when full, whole GSO skbs."""
    flags = NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO
    attrs = (attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META))
             + attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", maxlen))
             + attr(NFQA_CFG_FLAGS, struct.pack("!I", flags))
             + attr(NFQA_CFG_MASK, struct.pack("!I", flags)))
    return message(NFQNL_MSG_CONFIG, queue, attrs, seq=seq, flags=NLM_F_REQUEST | NLM_F_ACK)


def verdict(queue: int, packet_id: int, seq: int, *, batch: bool = False) -> bytes:
    """NF_ACCEPT for ``packet_id`` (with ``batch``: for every id up to and including it)."""
    kind = NFQNL_MSG_VERDICT_BATCH if batch else NFQNL_MSG_VERDICT
    return message(kind, queue, attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, packet_id)), seq=seq)


def iter_attrs(data: bytes, offset: int, end: int) -> Iterator[tuple[int, bytes]]:
    while offset + _NLATTR.size <= end:
        length, kind = _NLATTR.unpack_from(data, offset)
        if length < _NLATTR.size or offset + length > end:
            raise ValueError(f"attribute length {length} at {offset} runs past {end}")
        yield kind & 0x3FFF, data[offset + _NLATTR.size: offset + length]
        offset += _align(length)


@dataclass(frozen=True)
class Event:
    """One parsed netlink message: a queued packet, an ack/error, or something else."""

    kind: str            # "packet", "ack", "error", "other"
    queue: int = 0
    packet_id: int = 0
    error: int = 0       # positive errno for "error"
    seq: int = 0
    stamp_ns: int = 0    # kernel receive stamp (CLOCK_REALTIME, µs resolution) when the skb has one


def parse(data: bytes) -> list[Event]:
    """Split a datagram into messages; raises ValueError on a malformed one."""
    out: list[Event] = []
    off = 0
    while off + NLMSGHDR.size <= len(data):
        length, kind, _flags, seq, _pid = NLMSGHDR.unpack_from(data, off)
        if length < NLMSGHDR.size or off + length > len(data):
            raise ValueError(f"netlink message length {length} at {off} runs past {len(data)}")
        end = off + length
        if kind == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", data, off + NLMSGHDR.size)
            out.append(Event("ack" if code == 0 else "error", error=-code, seq=seq))
        elif kind == ((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET):
            _fam, _ver, queue = _NFGENMSG.unpack_from(data, off + NLMSGHDR.size)
            pid = None
            stamp = 0
            for akind, payload in iter_attrs(data, off + NLMSGHDR.size + _NFGENMSG.size, end):
                if akind == NFQA_PACKET_HDR:
                    if len(payload) < 7:
                        raise ValueError("short NFQA_PACKET_HDR")
                    (pid,) = struct.unpack_from("!I", payload)
                elif akind == NFQA_TIMESTAMP:
                    if len(payload) < 16:
                        raise ValueError("short NFQA_TIMESTAMP")
                    sec, usec = struct.unpack_from("!QQ", payload)
                    stamp = sec * 1_000_000_000 + usec * 1000
            if pid is None:
                raise ValueError("queued packet without NFQA_PACKET_HDR")
            out.append(Event("packet", queue=queue, packet_id=pid, seq=seq, stamp_ns=stamp))
        elif kind != NLMSG_DONE:
            out.append(Event("other", seq=seq))
        off += _align(length)
    if off < len(data) and data[off:].strip(b"\0"):
        raise ValueError(f"{len(data) - off} trailing bytes after the last message")
    return out


def bound_queues(proc_net: Path = Path("/proc/net/netfilter/nfnetlink_queue")) -> dict[int, int]:
    """queue number → port id of its listener, for the current network namespace."""
    try:
        text = proc_net.read_text()
    except OSError:
        return {}
    return parse_bound_queues(text)


def parse_bound_queues(text: str) -> dict[int, int]:
    out: dict[int, int] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].isdigit() and fields[1].isdigit():
            out[int(fields[0])] = int(fields[1])
    return out
