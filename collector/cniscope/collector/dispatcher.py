"""Probe dispatch: validate, schedule, send the command down the agent's stream, await the result.

Bandwidth probes (tcp, udp, http max-QPS) hold both nodes for their duration, so no two of them
share a node at once; light probes run with bounded concurrency.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from cniscope.api.v1 import agent_pb2, cluster_pb2, common_pb2
from cniscope.collector.state import ClusterState
from cniscope.collector.store import Store
from cniscope.core import probespec
from cniscope.core.errors import NotFound, ValidationError
from cniscope.core.params import ParamSet

log = logging.getLogger("cniscope.collector.dispatch")

LIGHT_CONCURRENCY = 32
GRACE_SECONDS = 30.0


@dataclass
class Pending:
    request: common_pb2.ProbeRequest
    result: asyncio.Future[common_pb2.ProbeResult]
    progress: asyncio.Queue[common_pb2.ProbeProgress] = field(default_factory=asyncio.Queue)


class Dispatcher:
    def __init__(self, state: ClusterState, store: Store) -> None:
        self.state = state
        self.store = store
        self.pending: dict[str, Pending] = {}
        self._node_locks: dict[str, asyncio.Lock] = {}
        self._light = asyncio.Semaphore(LIGHT_CONCURRENCY)

    def validate(self, req: common_pb2.ProbeRequest) -> tuple[common_pb2.ProbeRequest, float, bool]:
        spec = probespec.spec_for(req.kind)
        values = spec.params.validate(dict(req.params))
        path = probespec.validate_path(req.path)
        if not req.source_node:
            raise ValidationError("source node is required")
        if req.source_node not in self.state.sessions:
            known = ", ".join(sorted(self.state.sessions)) or "none connected"
            raise NotFound(f"source node {req.source_node!r} is not connected ({known})")
        if req.target_node and req.target_node not in self.state.nodes:
            raise NotFound(f"target node {req.target_node!r} is unknown")
        if not req.target_node and not req.target_address:
            raise ValidationError("a target node or a target address is required")
        out = common_pb2.ProbeRequest()
        out.CopyFrom(req)
        out.path = path
        out.probe_id = req.probe_id or uuid.uuid4().hex[:16]
        out.params.clear()
        out.params.update(ParamSet.to_strings(values))
        return out, spec.expected_seconds(dict(values)), probespec.is_bandwidth(req.kind, dict(values))

    def _lock(self, node: str) -> asyncio.Lock:
        return self._node_locks.setdefault(node, asyncio.Lock())

    @contextlib.asynccontextmanager
    async def _slot(self, req: common_pb2.ProbeRequest, bandwidth: bool) -> AsyncIterator[None]:
        if not bandwidth:
            async with self._light:
                yield
            return
        nodes = sorted({req.source_node, req.target_node} - {""})
        async with contextlib.AsyncExitStack() as stack:
            for n in nodes:  # sorted order: no deadlock between two pairs
                await stack.enter_async_context(self._lock(n))
            yield

    async def run(self, req: common_pb2.ProbeRequest) -> AsyncIterator[cluster_pb2.ProbeUpdate]:
        req, expected, bandwidth = self.validate(req)
        loop = asyncio.get_running_loop()
        pend = Pending(req, loop.create_future())
        self.pending[req.probe_id] = pend
        try:
            if bandwidth and any(self._lock(n).locked() for n in (req.source_node, req.target_node) if n):
                yield cluster_pb2.ProbeUpdate(progress=common_pb2.ProbeProgress(
                    probe_id=req.probe_id, fraction=0.0, message="queued: a bandwidth probe holds a node"))
            async with self._slot(req, bandwidth):
                session = self.state.sessions.get(req.source_node)
                if session is None:
                    raise NotFound(f"source node {req.source_node!r} disconnected")
                session.send(agent_pb2.CollectorMessage(command=agent_pb2.Command(
                    command_id=req.probe_id, run_probe=req)))
                deadline = time.monotonic() + expected + GRACE_SECONDS
                while not pend.result.done():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    getter = asyncio.ensure_future(pend.progress.get())
                    waits: set[asyncio.Future[Any]] = {getter, pend.result}
                    done, _ = await asyncio.wait(waits, timeout=remaining,
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if getter in done:
                        yield cluster_pb2.ProbeUpdate(progress=getter.result())
                    else:
                        getter.cancel()
                if pend.result.done():
                    result = pend.result.result()
                else:
                    result = common_pb2.ProbeResult(
                        probe_id=req.probe_id, kind=req.kind, source_node=req.source_node,
                        target_node=req.target_node, path=req.path, ok=False,
                        error=f"no result from {req.source_node} within {expected + GRACE_SECONDS:.0f}s",
                        finished_unix_nano=time.time_ns(), params=dict(req.params))
                    await self.store.call(self.store.record_result, result)
            yield cluster_pb2.ProbeUpdate(result=result)
        finally:
            self.pending.pop(req.probe_id, None)

    def on_result(self, result: common_pb2.ProbeResult) -> None:
        pend = self.pending.get(result.probe_id)
        if pend is not None and not pend.result.done():
            pend.result.set_result(result)

    def on_progress(self, progress: common_pb2.ProbeProgress) -> None:
        pend = self.pending.get(progress.probe_id)
        if pend is not None:
            pend.progress.put_nowait(progress)

    def on_refused(self, ack: agent_pb2.CommandAck, node: str) -> None:
        self.state.log_event("warning", f"refused command {ack.command_id}: {ack.error}", node)
