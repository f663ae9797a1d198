"""Probes this node originates: checked before any packet leaves, run, and always recorded.

A request is checked against the probe table, the peers and the allow-list first
(:mod:`cniscope.agent.probes.probe_request`); a refused one is recorded as a failed result. A
running probe reports progress on the stream and can be cancelled by its id. No two bandwidth
probes run at once on this node (they would corrupt each other's numbers). Whatever a probe does —
succeed, fail, raise, be cancelled — a result is recorded and sealed at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

from cniscope.agent.probes import PROBES, probe_request
from cniscope.agent.probes.probe import ProbeContext
from cniscope.api.v1 import agent_pb2, common_pb2
from cniscope.core.probekinds import spec_for

log = logging.getLogger("cniscope.agent")

ResultKey = tuple[str, str, str]   # (kind, target node or address, path)


class ProbeRunner:
    def __init__(self, node: str, origin: Callable[[], probe_request.Origin],
                 post: Callable[[agent_pb2.AgentMessage], None],
                 on_result: Callable[[common_pb2.ProbeResult], None]) -> None:
        """``origin()`` says where this node stands now (peers, allow-list and probe pod change);
        ``post`` sends progress on the stream; ``on_result`` seals a result into the next batch."""
        self.node = node
        self.origin = origin
        self.post = post
        self.on_result = on_result
        self.last_results: dict[ResultKey, common_pb2.ProbeResult] = {}   # the latest per key, for /metrics
        self.tasks: set[asyncio.Task[None]] = set()
        self._by_id: dict[str, asyncio.Task[None]] = {}
        self._bandwidth_lock = asyncio.Lock()

    @property
    def bandwidth_running(self) -> bool:
        return self._bandwidth_lock.locked()

    def prepare(self, req: common_pb2.ProbeRequest) -> ProbeContext:
        """Validate kind, parameters, path and target before any packet leaves."""
        return probe_request.prepare(req, self.origin())

    def start(self, req: common_pb2.ProbeRequest, ctx: ProbeContext) -> None:
        """Run a prepared probe in the background, reporting its progress on the stream."""
        async def progress(fraction: float, message: str) -> None:
            self.post(agent_pb2.AgentMessage(probe_progress=common_pb2.ProbeProgress(
                probe_id=req.probe_id, fraction=fraction, message=message)))

        ctx.progress = progress
        task = asyncio.create_task(self.run(req, ctx))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        self._by_id[req.probe_id] = task
        task.add_done_callback(lambda _t, pid=req.probe_id: self._by_id.pop(pid, None))  # type: ignore[misc]

    def cancel(self, probe_id: str) -> bool:
        """Cancel a running probe (its tool is killed; its result says "probe cancelled")."""
        running = self._by_id.get(probe_id)
        if running is not None:
            running.cancel()
        return running is not None

    async def run(self, req: common_pb2.ProbeRequest, ctx: ProbeContext) -> None:
        probe = PROBES.get(req.kind)
        started = time.time_ns()
        try:
            if spec_for(req.kind).is_bandwidth(ctx.params):
                async with self._bandwidth_lock:
                    outcome = await probe.run(ctx)
            else:
                outcome = await probe.run(ctx)
        except asyncio.CancelledError:
            self.record(req, ctx, started=started, error="probe cancelled")
            raise
        except Exception as exc:  # a probe's bug is a failed result, never a dead agent
            if not ctx.mesh:
                log.exception("probe %s %s failed", req.kind, req.probe_id)
            self.record(req, ctx, started=started, error=f"{type(exc).__name__}: {exc}")
            return
        detail = {**outcome.detail, "mesh": True} if ctx.mesh else outcome.detail
        self.record(req, ctx, started=started, ok=outcome.ok, error=outcome.error, figures=outcome.figures,
                    detail=detail)

    def record(self, req: common_pb2.ProbeRequest, ctx: ProbeContext | None, *,
               started: int | None = None, ok: bool = False, error: str = "",
               figures: dict[str, float] | None = None, detail: dict[str, object] | None = None) -> None:
        """Record a result (``ctx`` is None for a request refused before it was prepared)."""
        res = common_pb2.ProbeResult(
            probe_id=req.probe_id, kind=req.kind, source_node=self.node,
            target_node=req.target_node, target_address=ctx.target_address if ctx else req.target_address,
            path=ctx.path if ctx else req.path, ok=ok, error=error, figures=figures or {},
            detail_json=json.dumps(detail or {}, default=str),
            started_unix_nano=started or time.time_ns(), finished_unix_nano=time.time_ns(),
            params=ctx.result_params() if ctx else dict(req.params),
        )
        self.last_results[(res.kind, res.target_node or res.target_address, res.path)] = res
        self.on_result(res)
