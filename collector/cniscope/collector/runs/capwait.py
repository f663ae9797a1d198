"""Asking agents for fresh capability reports and waiting for them, for a bounded time.

A report is fresh when its time differs from the one held before the request. An agent whose
collection runs past its own time budget first sends what has finished, with ``unfinished`` naming
the unit still running and for how long, then the whole report; a run that goes on with such a
report can say which unit on which node was slow, not only that a node was late.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

from cniscope.api.v1 import agent_pb2
from cniscope.collector.state import ClusterState

CAPS_WAIT = 10.0  # then a run goes on with the last reports and says so


@dataclass
class Refresh:
    late: list[str] = field(default_factory=list)                  # no fresh report within the wait
    slow: dict[str, tuple[str, float]] = field(default_factory=dict)  # node → (unit still running, seconds)
    seconds: float = 0.0

    def note(self, wait: float = CAPS_WAIT) -> str:
        parts = []
        if self.late:
            parts.append(f"capability report not refreshed within {wait:g}s on {', '.join(self.late)}: "
                         "the last one received is used")
        for node, (unit, secs) in sorted(self.slow.items()):
            parts.append(f"{node}: capability unit {unit} still running after {secs:.1f}s, its previous result is used")
        return "; ".join(parts)


def request(state: ClusterState, nodes: list[str]) -> None:
    for n in nodes:
        s = state.sessions.get(n)
        if s is not None:
            s.send(agent_pb2.CollectorMessage(command=agent_pb2.Command(
                command_id=f"caps-{uuid.uuid4().hex[:8]}", refresh_capabilities=agent_pb2.RefreshCapabilities())))


async def refresh(state: ClusterState, nodes: list[str], wait: float = CAPS_WAIT, *, complete: bool = False,
                  poll: float = 0.1) -> Refresh:
    """Ask each agent for a fresh report and wait up to ``wait`` seconds. ``complete``: an unfinished
    report does not count (the census of the unit still running would be the previous one)."""
    t0 = time.monotonic()
    before = {n: state.nodes[n].capabilities.time_unix_nano for n in nodes if n in state.nodes}
    request(state, list(before))
    waiting = set(before)
    out = Refresh()
    while True:
        for n in list(waiting):
            rep = state.nodes[n].capabilities
            if rep.time_unix_nano == before[n]:
                continue
            if rep.HasField("unfinished"):
                out.slow[n] = (rep.unfinished.running, rep.unfinished.running_seconds)
                if complete:
                    continue
            else:
                out.slow.pop(n, None)
            waiting.discard(n)
        if not waiting or time.monotonic() - t0 >= wait:
            break
        await asyncio.sleep(poll)
    out.late = sorted(waiting)
    out.seconds = time.monotonic() - t0
    return out
