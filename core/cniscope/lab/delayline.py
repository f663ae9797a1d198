"""A userspace delay line over nfnetlink_queue, for kernels without ``sch_netem``.

An iptables rule ``-j NFQUEUE --queue-num N --queue-bypass`` hands packets to queue N; this process
binds the queue over a raw ``AF_NETLINK``/``NETLINK_NETFILTER`` socket (metadata only, no payload
copy), stamps each packet on arrival and returns ``NF_ACCEPT`` for it ``delay`` later, in arrival
order. It is meant for latency (RTT) ground truth, never for throughput.

Failure modes are open by construction:

* ``--queue-bypass`` on the rule: with no process bound to the queue, packets pass undelayed, so a
  killed delay line degrades to "no delay", never to "no traffic";
* ``NFQA_CFG_F_FAIL_OPEN``: when the kernel queue is full, packets pass instead of being dropped;
* ``--max-seconds``: the process ends itself (releasing what it holds) after a bounded lifetime.

Timer precision: timer slack is set to 1 ns, the loop sleeps in ``select`` until shortly before the
next release and busy-waits the last ``spin`` microseconds while still reading arrivals, so both
the arrival stamp and the release stay within tens of microseconds of their ideal instant.

Run as ``python -m cniscope.lab.delayline --queue N --delay-us D`` inside the node's namespace;
``cniscope lab impair`` starts it through ``Lab.spawn`` so ``lab down`` ends it by PID.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import heapq
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
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
PR_SET_TIMERSLACK = 29

_NLMSGHDR = struct.Struct("=IHHII")   # len, type, flags, seq, pid (host order)
_NFGENMSG = struct.Struct("!BBH")      # family, version, res_id (big endian)
_NLATTR = struct.Struct("=HH")         # len, type (host order)

MAX_DELAY_US = 10_000_000
MAX_LIFETIME_S = 24 * 3600.0
MAX_STAMP_AGE_NS = 50_000_000   # an older (or future) kernel stamp is not trusted: clock stepped


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
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags, seq, 0) + body


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
    while off + _NLMSGHDR.size <= len(data):
        length, kind, _flags, seq, _pid = _NLMSGHDR.unpack_from(data, off)
        if length < _NLMSGHDR.size or off + length > len(data):
            raise ValueError(f"netlink message length {length} at {off} runs past {len(data)}")
        end = off + length
        if kind == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", data, off + _NLMSGHDR.size)
            out.append(Event("ack" if code == 0 else "error", error=-code, seq=seq))
        elif kind == ((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET):
            _fam, _ver, queue = _NFGENMSG.unpack_from(data, off + _NLMSGHDR.size)
            pid = None
            stamp = 0
            for akind, payload in iter_attrs(data, off + _NLMSGHDR.size + _NFGENMSG.size, end):
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


# ---- the delay line ------------------------------------------------------------------------------
@dataclass
class Stats:
    packets: int = 0
    released: int = 0
    enobufs: int = 0
    malformed: int = 0
    late_us: list[float] = field(default_factory=list)   # release instant minus due instant

    def summary(self) -> dict[str, object]:
        late = sorted(self.late_us)

        def pct(p: float) -> float:
            return round(late[min(len(late) - 1, int(p / 100 * len(late)))], 1) if late else 0.0

        return {"packets": self.packets, "released": self.released, "enobufs": self.enobufs,
                "malformed": self.malformed, "late_p50_us": pct(50), "late_p99_us": pct(99),
                "late_max_us": round(late[-1], 1) if late else 0.0}


def arrival_ns(now_mono: int, now_wall: int, stamp_wall: int) -> int:
    """When the packet reached the hook, on the monotonic clock: the kernel's receive stamp when
    the skb carries a plausible one (ingress with timestamping on), else our own read time (which
    is late by this process's wake-up latency)."""
    if stamp_wall:
        age = now_wall - stamp_wall
        if 0 <= age <= MAX_STAMP_AGE_NS:
            return now_mono - age
    return now_mono


def set_timer_slack(ns: int = 1) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_TIMERSLACK, ns, 0, 0, 0)) == 0
    except OSError:
        return False


class DelayLine:
    """Holds each packet of ``queue`` for ``delay_ns`` and accepts it, in arrival order."""

    def __init__(self, queue: int, delay_ns: int, *, spin_ns: int = 200_000, maxlen: int = 4096,
                 rcvbuf: int = 4 << 20) -> None:
        if not 0 <= queue <= 65535:
            raise ValueError(f"queue number must be 0..65535, got {queue}")
        if not 0 <= delay_ns <= MAX_DELAY_US * 1000:
            raise ValueError(f"delay must be 0..{MAX_DELAY_US} µs")
        self.queue, self.delay_ns, self.spin_ns, self.maxlen = queue, delay_ns, spin_ns, maxlen
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)  # SO_RCVBUFFORCE (root)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind((0, 0))
        self.seq = 0
        self.heap: list[tuple[int, int]] = []   # (due ns, packet id); arrival order == id order
        self.stats = Stats()
        self._lost = False
        self._stop = False

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _request(self, msg: bytes, what: str) -> None:
        seq = _NLMSGHDR.unpack_from(msg)[3]
        self.sock.send(msg)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.sock], [], [], max(0.0, deadline - time.monotonic()))
            if not r:
                break
            for ev in parse(self.sock.recv(65536)):
                if ev.seq != seq:
                    continue
                if ev.kind == "error":
                    raise NetlinkError(ev.error, what)
                if ev.kind == "ack":
                    return
        raise NetlinkError(errno.ETIMEDOUT, what)

    def bind(self) -> None:
        self._request(config_bind(self.queue, self._next_seq()), f"bind queue {self.queue}")
        self._request(config_params(self.queue, self._next_seq(), maxlen=self.maxlen),
                      f"configure queue {self.queue}")
        self.sock.setblocking(False)

    def stop(self) -> None:
        self._stop = True

    def _drain(self) -> None:
        """Read every pending message without blocking; stamp arrivals now."""
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:   # the kernel dropped notifications: ids were lost
                    self.stats.enobufs += 1
                    self._lost = True
                    continue
                raise
            now = time.monotonic_ns()
            wall = time.time_ns()
            try:
                events = parse(data)
            except ValueError:
                self.stats.malformed += 1
                continue
            for ev in events:
                if ev.kind == "packet":
                    self.stats.packets += 1
                    heapq.heappush(self.heap, (arrival_ns(now, wall, ev.stamp_ns) + self.delay_ns, ev.packet_id))

    def _release_due(self) -> None:
        now = time.monotonic_ns()
        while self.heap and self.heap[0][0] <= now:
            due, pid = heapq.heappop(self.heap)
            # after lost notifications, a batch verdict also frees the ids we never saw
            late = time.monotonic_ns() - due
            self.sock.send(verdict(self.queue, pid, self._next_seq(), batch=self._lost))
            self._lost = False
            self.stats.released += 1
            if len(self.stats.late_us) < 1_000_000:
                self.stats.late_us.append(late / 1000)
            now = time.monotonic_ns()

    def run(self, max_seconds: float) -> Stats:
        end = time.monotonic_ns() + int(max_seconds * 1e9)
        while not self._stop and time.monotonic_ns() < end:
            self._drain()
            self._release_due()
            now = time.monotonic_ns()
            wake = min(self.heap[0][0], end) if self.heap else end
            wait = wake - now - self.spin_ns
            if wait > 0:
                try:
                    select.select([self.sock], [], [], min(wait, 200_000_000) / 1e9)
                except InterruptedError:
                    pass
            # else: spin, still reading arrivals, until the next release is due
        self.flush()
        return self.stats

    def flush(self) -> None:
        """Accept everything still held (used at exit: never strand a packet)."""
        while self.heap:
            _due, pid = heapq.heappop(self.heap)
            try:
                self.sock.send(verdict(self.queue, pid, self._next_seq(), batch=True))
            except OSError:
                break
            self.stats.released += 1

    def close(self) -> None:
        try:
            self.sock.setblocking(True)
            self.sock.send(config_unbind(self.queue, self._next_seq()))
        except OSError:
            pass
        self.sock.close()


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cniscope.lab.delayline",
                                 description="Delay every packet of an NFQUEUE queue (fail-open).")
    ap.add_argument("--queue", type=int, required=True, help="NFQUEUE queue number")
    ap.add_argument("--delay-us", type=float, required=True, help="one-way delay in microseconds")
    ap.add_argument("--max-seconds", type=float, default=3600.0, help="end after this long (bounded)")
    ap.add_argument("--spin-us", type=float, default=200.0, help="busy-wait this long before a release")
    ap.add_argument("--rt-priority", type=int, default=10, help="SCHED_FIFO priority, 0 = normal")
    ap.add_argument("--stats", default=None, help="write a JSON summary here at exit")
    ns = ap.parse_args(argv)
    if not 0 < ns.max_seconds <= MAX_LIFETIME_S:
        ap.error(f"--max-seconds must be in (0, {MAX_LIFETIME_S:.0f}]")
    if not 0 <= ns.rt_priority <= 50:
        ap.error("--rt-priority must be in [0, 50]")
    if not 0 <= ns.delay_us <= MAX_DELAY_US:
        ap.error(f"--delay-us must be in [0, {MAX_DELAY_US}]")
    set_timer_slack(1)
    if ns.rt_priority > 0:
        try:   # a sleeping, briefly spinning process: real-time priority keeps releases on time
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(ns.rt_priority))
        except OSError as exc:
            print(f"delayline: no real-time priority ({exc}); releases may be late under load",
                  file=sys.stderr, flush=True)
    line = DelayLine(ns.queue, int(ns.delay_us * 1000), spin_ns=int(ns.spin_us * 1000))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: line.stop())
    try:
        line.bind()
    except NetlinkError as exc:
        print(f"delayline: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"delayline: queue {ns.queue} bound, delay {ns.delay_us:g} µs, "
          f"lifetime {ns.max_seconds:g} s", flush=True)
    try:
        stats = line.run(ns.max_seconds)
    finally:
        line.close()
    summary = stats.summary()
    print("delayline: " + json.dumps(summary), flush=True)
    if ns.stats:
        tmp = Path(ns.stats + ".tmp")
        tmp.write_text(json.dumps({**summary, "late_us": [round(x, 1) for x in stats.late_us[:100_000]]}))
        os.replace(tmp, ns.stats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
