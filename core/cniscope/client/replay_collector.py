"""A recording served as if it were the collector (``cniscope tui --replay FILE``): deterministic
tests and demos without a cluster."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from cniscope.api.v1 import cluster_pb2, common_pb2
from cniscope.client.client_protocol import ConnectionState
from cniscope.client.event_recording import read_recording
from cniscope.client.run_summary import RunSummary, RunsUnavailable


class ReplayClient:
    """Replays a recording (:mod:`.event_recording`). A recording without stored runs behaves like
    a collector without a runs API; a probe is answered with the recorded result for its pair."""

    def __init__(self, path: str | Path, speed: float = 0.0) -> None:
        self.address = f"replay:{Path(path).name}"
        self.path = Path(path)
        self.speed = speed  # 0: as fast as possible; 1: real time
        self.probe_results: dict[tuple[str, str, str], common_pb2.ProbeResult] = {}
        self.history: list[common_pb2.ProbeResult] = []
        self.runs: list[RunSummary] | None = None
        self.done = False  # every recorded event has been yielded

    def load(self) -> list[tuple[float, cluster_pb2.ClusterEvent]]:
        rec = read_recording(self.path)
        self.runs = rec.runs
        for _, ev in rec.events:
            if ev.WhichOneof("body") == "probe_result":
                r = ev.probe_result
                self.probe_results[(r.kind, r.source_node, r.target_node)] = r
                self.history.append(r)
        return rec.events

    async def events(self) -> AsyncIterator[cluster_pb2.ClusterEvent | ConnectionState]:
        items = self.load()
        yield ConnectionState(True, "replay")
        last = 0.0
        for t, ev in items:
            if self.speed > 0 and t > last:
                await asyncio.sleep((t - last) / self.speed)
            last = t
            yield ev
        self.done = True
        await asyncio.Event().wait()  # a replay stays "connected" and idle at its end

    async def run_probe(self, req: common_pb2.ProbeRequest) -> AsyncIterator[cluster_pb2.ProbeUpdate]:
        rec = self.probe_results.get((req.kind, req.source_node, req.target_node))
        yield cluster_pb2.ProbeUpdate(progress=common_pb2.ProbeProgress(fraction=0.5, message="replay"))
        if rec is None:
            rec = common_pb2.ProbeResult(kind=req.kind, source_node=req.source_node, target_node=req.target_node,
                                         path=req.path, ok=False, error="no such probe in the recording")
        yield cluster_pb2.ProbeUpdate(result=rec)

    async def probe_history(self, kind: str, src: str, dst: str, limit: int = 50) -> list[common_pb2.ProbeResult]:
        found = [r for r in self.history if (r.kind, r.source_node, r.target_node) == (kind, src, dst)]
        return found[-limit:]

    async def list_runs(self) -> list[RunSummary]:
        if self.runs is None:
            raise RunsUnavailable("no runs API on this collector (the recording holds no runs)")
        return list(self.runs)

    async def close(self) -> None:
        return None
