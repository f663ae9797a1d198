"""Whether each bcc tracer could run here — bcc importable, kernel headers, tracefs and its
tracepoint — without compiling or loading anything."""

from __future__ import annotations

import importlib.util

from cniscope.agent.inspectors.unit import NOT_READY, READY, UnitResult
from cniscope.agent.tracers import TRACERS
from cniscope.agent.tracers.bcc_tracer import environment_problem
from cniscope.api.v1 import capabilities_pb2 as cap
from cniscope.core.hostpaths import HostPaths


def summarize(d: cap.TracersDetail) -> str:
    """``3 tracers can run (drops, retrans, tcpconnlat)`` or ``0 of 3 tracers can run: <why>``."""
    ready = [t.name for t in d.tracers if t.available]
    if len(ready) == len(d.tracers):
        return f"{len(ready)} tracers can run ({', '.join(ready)})" if ready else "no tracers"
    why = "; ".join(dict.fromkeys(t.reason.removeprefix("unavailable: ") for t in d.tracers if not t.available))
    return f"{len(ready)} of {len(d.tracers)} tracers can run" + (f" ({', '.join(ready)})" if ready else "") + \
        f": {why}"


def inspect_tracers(paths: HostPaths) -> UnitResult:
    d = cap.TracersDetail()
    res = UnitResult(d)
    # find_spec, not import: importing bcc loads LLVM, far too heavy for a capability report
    bcc_problem = None if importlib.util.find_spec("bcc") is not None else \
        "bcc is not importable; install Debian's python3-bpfcc"
    for name, factory in TRACERS.items():
        events = getattr(factory, "events", [])
        problem = bcc_problem or environment_problem(events, tracefs=paths.sys_path("kernel", "tracing"))
        d.tracers.add(name=name, events=events, available=problem is None,
                      reason=f"unavailable: {problem}" if problem else "")
        res.item(f"tracer_{name}", NOT_READY if problem else READY,
                 problem or f"bcc and tracepoint {', '.join(events)} present")
    res.summary = summarize(d)
    return res
