"""Connect setup as the kernel saw it: the source node's ``tcpconnlat`` tracer around one connect probe.

An agent that runs the tracer on the probe's namespace reads its counters itself, just before and just
after the probe's connects, and sends the difference with the result (``kernel_connects``,
``kernel_setup_sum_us``; :func:`direct`), or says in the detail's ``kernel_note`` why it has none
(not configured, still compiling, failed to start, watching another namespace). Every repetition then
has its own reading, and nothing waits for a sample batch. What follows is the fallback for an agent
whose results carry neither.

The agent's tracer (``CNISCOPE_TRACERS=tcpconnlat``) sends cumulative counters every sample interval:
``tcp_connect_latency_us_count`` (SYN_SENT → ESTABLISHED transitions) and ``…_sum`` (their µs, each
truncated to a whole µs). Read before and after a probe, Δsum/Δcount is the mean in-kernel setup time
of the connects in between, and Δcount can be checked against the connects the probe made.

A reading counts only if the agent took it after the probe had finished: both stamps come from the
agent's clock, so clock skew does not enter. The collector waits, bounded, for that batch. Each
reading is also the "before" of the next probe from the same pod, so no two probes share a window.
The tracer counts every active connect in its namespace: the lab traces each node's probe pod only
(``Lab.start_cluster``), where nothing but probes connects (the mesh pings); in a cluster the agent
traces every namespace unless ``CNISCOPE_TRACER_NETNS`` narrows it, and a Δcount that differs from
the probe's connects is reported as such.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

from cniscope.api.v1 import common_pb2
from cniscope.collector.runs.manager import Stopped
from cniscope.collector.state import ClusterState

TRACER = "tcpconnlat"
COUNT = f"tcp_connect_latency_us_count{{tracer={TRACER}}}"
SUM = f"tcp_connect_latency_us_sum{{tracer={TRACER}}}"
WAIT = 15.0          # for the batch after a probe: about two sample intervals of a default agent
POLL = 0.05
STALE_NS = 5 * 10**9  # the tracer's counters lag the node's newest sample by more: the tracer stopped


@dataclass(frozen=True)
class Reading:
    count: float
    sum_us: float
    t_ns: int        # the agent's clock, when it read the counters
    boot: str


@dataclass(frozen=True)
class KernelSetup:
    """One probe in the kernel's eyes: Δcount, the probe's own successful connects, and Δsum/Δcount."""

    connects: int = 0
    probe_connects: int = 0
    mean_us: float | None = None
    note: str = ""


def reading(state: ClusterState, node: str) -> Reading | None:
    state.settle(node)
    latest = state.latest.get(node) or {}
    c, s, st = latest.get(COUNT), latest.get(SUM), state.nodes.get(node)
    if c is None or s is None or st is None:
        return None
    return Reading(c.value, s.value, min(c.time_unix_nano, s.time_unix_nano), st.boot_id)


def not_running(state: ClusterState, node: str) -> str | None:
    """Why the node's tracer gives no reading (None: it reports)."""
    state.settle(node)
    latest = state.latest.get(node) or {}
    c = latest.get(COUNT)
    if c is None:
        return (f"tracer {TRACER} is not running on {node} (no {COUNT.split('{')[0]} samples; the agent runs it "
                f"with CNISCOPE_TRACERS={TRACER}, the lab with `lab up --tracers {TRACER}`)")
    newest = max(s.time_unix_nano for s in latest.values())
    if newest - c.time_unix_nano > STALE_NS:
        return f"tracer {TRACER} on {node} stopped reporting {(newest - c.time_unix_nano) / 1e9:.0f}s ago"
    return None


def direct(res: common_pb2.ProbeResult) -> KernelSetup | None:
    """The agent's own reading around the probe, or its reason for having none; None when the result
    carries neither (an agent that does not read its tracer around probes)."""
    probe = int(res.figures.get("connected", 0))
    if "kernel_connects" in res.figures:
        return counted(res.figures["kernel_connects"], res.figures.get("kernel_setup_sum_us", 0.0), probe)
    try:
        note = json.loads(res.detail_json or "{}").get("kernel_note")
    except (ValueError, AttributeError):
        note = None
    return KernelSetup(0, probe, None, f"{res.source_node}: {note}") if isinstance(note, str) and note else None


def delta(before: Reading, after: Reading, probe_connects: int) -> KernelSetup:
    """The kernel's view of what happened between two readings of the same tracer."""
    dc, ds = after.count - before.count, after.sum_us - before.sum_us
    if after.boot != before.boot or dc < 0 or ds < 0:
        return KernelSetup(0, probe_connects, None, "the tracer's counters restarted between the readings")
    return counted(dc, ds, probe_connects)


def counted(dc: float, ds: float, probe_connects: int) -> KernelSetup:
    """Δcount connects in Δsum µs, against the probe's own successful connects."""
    if dc == 0:
        return KernelSetup(0, probe_connects, None,
                           f"the tracer counted no connect for the probe's {probe_connects}")
    note = ""
    if dc != probe_connects:
        why = ("other connects from the traced namespace fell in the window" if dc > probe_connects
               else "the tracer missed some")
        note = f"the tracer counted {dc:.0f} connects for the probe's {probe_connects}: {why}"
    return KernelSetup(int(dc), probe_connects, ds / dc, note)


class KernelWatch:
    """The tracer of one source node across a sequence of probes (see the module docstring)."""

    def __init__(self, state: ClusterState, node: str, cancel: asyncio.Event | None = None,
                 wait: float = WAIT) -> None:
        self.state, self.node, self.wait = state, node, wait
        self.cancel = cancel or asyncio.Event()
        self.last: Reading | None = None
        self.why_not: str | None = None

    def check(self) -> str | None:
        """Before a step: is the tracer reporting? A step without it waits for nothing."""
        self.why_not = not_running(self.state, self.node)
        if self.why_not:
            self.last = None
        return self.why_not

    async def _after(self, t_ns: int) -> Reading | None:
        deadline = time.monotonic() + self.wait
        while True:
            r = reading(self.state, self.node)
            if r is not None and r.t_ns >= t_ns:
                return r
            if time.monotonic() >= deadline:
                return None
            try:
                await asyncio.wait_for(self.cancel.wait(), POLL)
            except TimeoutError:
                continue
            raise Stopped

    async def mark(self, res: common_pb2.ProbeResult) -> Reading | None:
        """Wait for the first reading taken after ``res`` finished; it opens the next window. A result
        that carries the agent's own reading (or its reason for none) needs no window."""
        if self.why_not or direct(res) is not None:
            return None
        self.last = await self._after(res.finished_unix_nano or time.time_ns())
        if self.last is None:
            self.why_not = f"tracer {TRACER} on {self.node} sent no counters within {self.wait:g}s after a probe"
        return self.last

    async def measure(self, res: common_pb2.ProbeResult) -> KernelSetup:
        """The agent's own reading around ``res``; else the window from the previous mark to the first
        reading after ``res``."""
        got = direct(res)
        if got is not None:
            return got if res.ok or got.mean_us is None else KernelSetup(got.connects, got.probe_connects, None,
                                                                         "the probe failed")
        probe = int(res.figures.get("connected", 0))
        before = self.last
        if self.why_not or before is None:
            return KernelSetup(0, probe, None, self.why_not or "no tracer reading before the probe")
        after = await self.mark(res)
        if after is None:
            return KernelSetup(0, probe, None, self.why_not or "")
        if not res.ok:
            return KernelSetup(0, probe, None, "the probe failed")
        return delta(before, after, probe)
