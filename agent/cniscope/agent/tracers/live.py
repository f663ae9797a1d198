"""The tracers this agent process runs, for probes that read a tracer's counters around their own work.

The connect probe reads ``tcpconnlat``'s counters just before and just after its connects, on the
same thread, so each probe carries its own in-kernel reading (see ``probes/connect.py``) instead of
a collector waiting for the sample batch that follows it. When there is no reading, :func:`find`
says why, in the words a person can act on: the tracer is not configured here, is still compiling,
could not start (and why), or watches another network namespace than the probe's.

The tracer sampler (``samplers/tracer_counters.py``) reports each tracer's life here: configured,
starting, started, failed, stopped.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from cniscope.agent.tracers.bcc_tracer import BccTracer


@dataclass
class _State:
    status: str = "configured"      # configured | starting | running | failed | stopped
    since: float = 0.0              # monotonic time of the last change
    reason: str = ""
    tracers: tuple[BccTracer, ...] = ()


_lock = threading.Lock()
_states: dict[str, _State] = {}


def _set(name: str, status: str, reason: str = "", add: BccTracer | None = None,
         remove: BccTracer | None = None) -> None:
    with _lock:
        old = _states.get(name, _State())
        tracers = tuple(t for t in old.tracers if t is not remove) + ((add,) if add is not None else ())
        _states[name] = _State("running" if tracers else status, time.monotonic(), reason, tracers)


def configured(name: str) -> None:
    with _lock:
        _states.setdefault(name, _State(since=time.monotonic()))


def starting(name: str) -> None:
    _set(name, "starting")


def started(tracer: BccTracer) -> None:
    _set(tracer.name, "running", add=tracer)


def failed(name: str, reason: str) -> None:
    _set(name, "failed", reason)


def stopped(tracer: BccTracer) -> None:
    _set(tracer.name, "stopped", remove=tracer)


def netns_inode(path: str) -> int:
    """The network namespace inode of ``path`` ("" = this process's)."""
    return os.stat(path or "/proc/self/ns/net").st_ino


def find(name: str, netns_path: str = "") -> tuple[BccTracer | None, str]:
    """The running tracer ``name`` that watches the namespace at ``netns_path`` ("" = the agent's
    own), or None and why there is none."""
    with _lock:
        st = _states.get(name)
        tracers = st.tracers if st else ()
    if st is None:
        return None, (f"tracer {name} is not configured on this agent (CNISCOPE_TRACERS; in the lab "
                      f"`lab up --tracers {name}`)")
    if not tracers:
        age = time.monotonic() - st.since
        return None, {"configured": f"tracer {name} has not started yet (it starts with the first sample round)",
                      "starting": f"tracer {name} is still compiling and loading ({age:.0f}s so far)",
                      "failed": f"tracer {name} could not start: {st.reason}",
                      "stopped": f"tracer {name} was stopped"}.get(st.status, f"tracer {name}: {st.status}")
    ino = netns_inode(netns_path)
    for t in tracers:
        if t.netns_inum in (0, ino):
            return t, ""
    return None, (f"tracer {name} watches network namespace {tracers[0].netns or tracers[0].netns_inum}, "
                  f"the probe ran in {netns_path or 'the agent’s own'}")


def reset() -> None:
    """Forget every tracer (tests)."""
    with _lock:
        _states.clear()
