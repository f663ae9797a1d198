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

The netlink messages are :mod:`cniscope.lab.nfqueue_wire`'s. Run as
``python -m cniscope.lab.delayline --queue N --delay-us D`` inside the node's namespace;
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
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from cniscope.lab.nfqueue_wire import (
    NETLINK_NETFILTER,
    NLMSGHDR,
    NetlinkError,
    config_bind,
    config_params,
    config_unbind,
    parse,
    verdict,
)

MAX_DELAY_US = 10_000_000
MAX_LIFETIME_S = 24 * 3600.0
MAX_STAMP_AGE_NS = 50_000_000   # an older (or future) kernel stamp is not trusted: clock stepped
PR_SET_TIMERSLACK = 29


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
        seq = NLMSGHDR.unpack_from(msg)[3]
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
