"""The capability report the agent sends in Hello and on ``refresh capabilities``.

Inspection units (iptables/nft census, eBPF census, NIC/XDP, kernel readiness, tracers) register in
``cniscope.agent.inspectors``; this module runs every registered unit, times it, and turns
"does not apply" into ``unavailable: <reason>`` instead of a failure. Each unit's findings travel as
its typed message (``UnitReport.detail``) with the one-line summary it makes of them; a unit that does
not apply or failed states its reason as its summary.

A collection can record its :class:`Progress`, so that while it is still running (a census of a
large ruleset on a busy node) :func:`unfinished` can answer with what has finished: the other units
repeat the previous collection's entries and are named in ``unfinished``, with the unit still
running and for how long.
"""

from __future__ import annotations

import platform
import threading
import time
from dataclasses import dataclass, field

from cniscope.agent import caps
from cniscope.agent.inspectors import INSPECTORS
from cniscope.agent.inspectors.unit import fill_report
from cniscope.api.v1 import common_pb2
from cniscope.core.errors import Unavailable
from cniscope.core.hostpaths import HostPaths


@dataclass
class Progress:
    """How far a collection has got; written by the thread running it, read under ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    finished: dict[str, tuple[common_pb2.UnitReport, list[common_pb2.CapabilityItem]]] = field(default_factory=dict)
    running: str = ""
    since: float = 0.0   # time.monotonic() when ``running`` started


def collect(paths: HostPaths | None = None, only: list[str] | None = None, *,
            progress: Progress | None = None) -> common_pb2.CapabilityReport:
    hp = paths or HostPaths.from_env()
    report = common_pb2.CapabilityReport(time_unix_nano=time.time_ns(), kernel=platform.release())
    for name, unit in INSPECTORS.items():
        if only and name not in only:
            continue
        if progress is not None:
            with progress.lock:
                progress.running, progress.since = name, time.monotonic()
        t0 = time.perf_counter()
        ur = common_pb2.UnitReport(name=name)
        items: list[common_pb2.CapabilityItem] = []
        try:
            caps.require(*(caps.required_by(unit) or caps.FEATURE_CAPS.get(name, ())))
            res = unit(hp)
            ur.ok, ur.available = True, True
            fill_report(ur, res)
            items = list(res.items)
        except Unavailable as exc:
            ur.ok, ur.available, ur.error = True, False, f"unavailable: {exc}"
            ur.summary = ur.error
        except Exception as exc:  # one unit's failure never takes the report down
            ur.ok, ur.available, ur.error = False, True, f"{type(exc).__name__}: {exc}"
            ur.summary = ur.error
        ur.duration_seconds = round(time.perf_counter() - t0, 6)
        report.units.append(ur)
        report.items.extend(items)
        if progress is not None:
            with progress.lock:
                progress.finished[name] = (ur, items)
                progress.running = ""
    return report


def unfinished(progress: Progress, previous: Progress | None) -> common_pb2.CapabilityReport:
    """The report of a collection still running, as of now: the units it has finished, every other
    unit as ``previous`` had it (left out where there is none) and named in ``unfinished.stale``."""
    with progress.lock:
        done = dict(progress.finished)
        running, since = progress.running, progress.since
    report = common_pb2.CapabilityReport(time_unix_nano=time.time_ns(), kernel=platform.release())
    report.unfinished.running = running
    report.unfinished.running_seconds = round(time.monotonic() - since, 3) if running else 0.0
    for name in INSPECTORS.names():
        got = done.get(name)
        if got is None:
            report.unfinished.stale.append(name)
            if previous is not None:
                got = previous.finished.get(name)
        if got is not None:
            report.units.append(got[0])
            report.items.extend(got[1])
    return report
