"""Probe dispatch: validate, schedule, send the command down the agent's stream, await the result.

What a kind needs comes from its row in the probe table (``probekinds``): its parameters and caps,
whether it needs a target, whether the target serves a one-off server first, and whether it is a
bandwidth probe. Bandwidth probes (tcp, udp, http max-QPS) hold both nodes for their duration, so no
two of them share a node at once; light probes run with bounded concurrency.

Probe ids are the collector's: RunProbe ignores a client's, and the first update of every probe
announces the one it got. What agents answer — progress, results, command acks — counts only from
the node the command went to; anything else is reported to the caller of ``on_*`` and dropped.
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

from cniscope.api.v1 import agent_pb2, cluster_pb2, common_pb2, targets_pb2
from cniscope.collector.principals import shorten
from cniscope.collector.state import ClusterState
from cniscope.collector.store import Store
from cniscope.core.errors import NotFound, ValidationError
from cniscope.core.params import ParamValues
from cniscope.core.probekinds import spec_for
from cniscope.core.probespec import ProbeSpec, validate_path

log = logging.getLogger("cniscope.collector.dispatch")

LIGHT_CONCURRENCY = 32
MAX_PROBE_ID = 128
NAMED_NODES = 10   # connected nodes named in a "not connected" error at most
GRACE_SECONDS = 30.0
PROGRESS_QUEUE = 64   # progress updates of one probe waiting for its caller; beyond, dropped
SERVE_TIMEOUT = 10.0


@dataclass(frozen=True)
class Admitted:
    """A request that passed validation: its parameters parsed once, and what that decides."""

    request: common_pb2.ProbeRequest   # path, probe id and every parameter filled in
    spec: ProbeSpec
    values: ParamValues
    expected: float                    # seconds the probe should take
    bandwidth: bool                    # holds both nodes while it runs

    @property
    def served(self) -> bool:
        """The target agent starts a one-off server before the source begins."""
        return self.spec.served and bool(self.request.target_node)


@dataclass
class Pending:
    request: common_pb2.ProbeRequest
    result: asyncio.Future[common_pb2.ProbeResult]
    progress: asyncio.Queue[common_pb2.ProbeProgress] = field(default_factory=asyncio.Queue)
    served: bool = False


class Dispatcher:
    def __init__(self, state: ClusterState, store: Store) -> None:
        self.state = state
        self.store = store
        self.pending: dict[str, Pending] = {}
        self._node_locks: dict[str, asyncio.Lock] = {}
        self._light = asyncio.Semaphore(LIGHT_CONCURRENCY)
        self._acks: dict[str, tuple[str, asyncio.Future[agent_pb2.CommandAck]]] = {}  # id → (node, answer)
        self._tasks: set[asyncio.Task[None]] = set()

    def validate(self, req: common_pb2.ProbeRequest) -> Admitted:
        spec = spec_for(req.kind)
        values = spec.params.validate(dict(req.params))
        path = validate_path(req.path)
        if not req.source_node:
            raise ValidationError("source node is required")
        if req.source_node not in self.state.sessions:
            names = sorted(self.state.sessions)
            known = ", ".join(names[:NAMED_NODES]) or "none connected"
            if len(names) > NAMED_NODES:
                known += f" and {len(names) - NAMED_NODES} more"
            raise NotFound(f"source node {shorten(req.source_node)} is not connected ({known})")
        if req.target_node and req.target_node not in self.state.nodes:
            raise NotFound(f"target node {shorten(req.target_node)} is unknown")
        probe_id = req.probe_id or uuid.uuid4().hex[:16]
        if len(probe_id) > MAX_PROBE_ID or not probe_id.isprintable():
            raise ValidationError(f"probe id {shorten(probe_id)} must be 1-{MAX_PROBE_ID} printable characters")
        if probe_id in self.pending:
            raise ValidationError(f"probe id {shorten(probe_id)} is already running")
        if not req.target_node and not req.target_address and spec.needs_target:
            raise ValidationError("a target node or a target address is required")
        if path == "service" and not req.target_address:
            raise ValidationError("the service path needs the Service's ClusterIP as the target address")
        if req.target_node and not req.target_address and spec.needs_target:
            st = self.state.nodes[req.target_node]
            what, address = ("probe-pod address", st.pod_ip) if path == "pod" else ("host address", st.host_ip)
            self.state.trust.check_address(what, req.target_node, address)
        out = common_pb2.ProbeRequest()
        out.CopyFrom(req)
        out.path = path
        out.probe_id = probe_id
        out.params.clear()
        out.params.update(values.to_wire())
        return Admitted(out, spec, values, spec.expected_seconds(values), spec.is_bandwidth(values))

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
        """Progress, then the result. The probe runs in its own task: a caller that goes away does
        not release the nodes while the agents are still measuring."""
        adm = self.validate(req)
        updates: asyncio.Queue[cluster_pb2.ProbeUpdate | None] = asyncio.Queue()
        task = asyncio.create_task(self._execute(adm, updates), name=f"probe:{adm.request.probe_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        while (upd := await updates.get()) is not None:
            yield upd
        await task  # re-raises what stopped it (e.g. the source disconnected)

    async def _execute(self, adm: Admitted, out: asyncio.Queue[cluster_pb2.ProbeUpdate | None]) -> None:
        req, expected, bandwidth, served = adm.request, adm.expected, adm.bandwidth, adm.served
        loop = asyncio.get_running_loop()
        pend = Pending(req, loop.create_future(), served=served)
        self.pending[req.probe_id] = pend
        out.put_nowait(cluster_pb2.ProbeUpdate(progress=common_pb2.ProbeProgress(
            probe_id=req.probe_id, fraction=0.0, message=f"admitted as probe {req.probe_id}")))
        try:
            if bandwidth and any(self._lock(n).locked() for n in (req.source_node, req.target_node) if n):
                out.put_nowait(cluster_pb2.ProbeUpdate(progress=common_pb2.ProbeProgress(
                    probe_id=req.probe_id, fraction=0.0, message="queued: a bandwidth probe holds a node")))
            async with self._slot(req, bandwidth):
                session = self.state.sessions.get(req.source_node)
                if session is None:
                    raise NotFound(f"source node {req.source_node!r} disconnected")
                if served:
                    out.put_nowait(cluster_pb2.ProbeUpdate(progress=common_pb2.ProbeProgress(
                        probe_id=req.probe_id, fraction=0.0,
                        message=f"starting a one-off iperf3 server on {req.target_node}")))
                    refusal = await self._serve_target(req, expected)
                    if refusal is not None:
                        result = self._failed(req, refusal)
                        await self.store.call(self.store.record_result, result)
                        out.put_nowait(cluster_pb2.ProbeUpdate(result=result))
                        return
                self.state.flush_peers_to(session)
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
                        out.put_nowait(cluster_pb2.ProbeUpdate(progress=getter.result()))
                    else:
                        getter.cancel()
                if pend.result.done():
                    result = pend.result.result()
                else:
                    result = self._failed(
                        req, f"no result from {req.source_node} within {expected + GRACE_SECONDS:.0f}s")
                    await self.store.call(self.store.record_result, result)
                if served and not result.ok:
                    self._stop_target(req)
            out.put_nowait(cluster_pb2.ProbeUpdate(result=result))
        finally:
            self.pending.pop(req.probe_id, None)
            out.put_nowait(None)

    @staticmethod
    def _failed(req: common_pb2.ProbeRequest, error: str) -> common_pb2.ProbeResult:
        return common_pb2.ProbeResult(
            probe_id=req.probe_id, kind=req.kind, source_node=req.source_node,
            target_node=req.target_node, path=req.path, ok=False, error=error,
            started_unix_nano=time.time_ns(), finished_unix_nano=time.time_ns(), params=dict(req.params))

    async def _serve_target(self, req: common_pb2.ProbeRequest, expected: float) -> str | None:
        """Have the target agent start its one-off server; set ``req.target_port``. None when ready,
        else the reason it is not."""
        target = self.state.sessions.get(req.target_node)
        if target is None:
            return f"target node {req.target_node!r} is not connected, so it cannot serve the test"
        command_id = f"{req.probe_id}:serve"
        fut: asyncio.Future[agent_pb2.CommandAck] = asyncio.get_running_loop().create_future()
        self._acks[command_id] = (req.target_node, fut)
        try:
            target.send(agent_pb2.CollectorMessage(command=agent_pb2.Command(
                command_id=command_id, serve_target=targets_pb2.ServeTarget(
                    probe_id=req.probe_id, kind=req.kind, path=req.path, port=req.target_port,
                    expected_seconds=expected))))
            try:
                ack = await asyncio.wait_for(fut, SERVE_TIMEOUT)
            except TimeoutError:
                return f"target node {req.target_node} did not start its iperf3 server within {SERVE_TIMEOUT:.0f}s"
        finally:
            self._acks.pop(command_id, None)
        if not ack.accepted:
            return f"target node {req.target_node} cannot serve the test: {ack.error}"
        req.target_port = ack.target.port
        return None

    def _stop_target(self, req: common_pb2.ProbeRequest) -> None:
        target = self.state.sessions.get(req.target_node)
        if target is not None:
            command_id = f"{req.probe_id}:stop"
            self._acks[command_id] = (req.target_node, asyncio.get_running_loop().create_future())  # quietly
            target.send(agent_pb2.CollectorMessage(command=agent_pb2.Command(
                command_id=command_id, stop_target=targets_pb2.StopTarget(probe_id=req.probe_id))))

    def cancel(self, probe_id: str) -> bool:
        """Ask the source agent to stop a running probe (its tool is killed, the result says
        "probe cancelled"). The target's one-off server stops once that result is in (the probe's
        loop stops it for every failed result), so the client never sees its server vanish first and
        report a reset connection instead of the cancellation. False when it is not running."""
        pend = self.pending.get(probe_id)
        if pend is None:
            return False
        req = pend.request
        session = self.state.sessions.get(req.source_node)
        if session is not None:
            command_id = f"{probe_id}:cancel"
            self._acks[command_id] = (req.source_node, asyncio.get_running_loop().create_future())  # quietly
            session.send(agent_pb2.CollectorMessage(command=agent_pb2.Command(
                command_id=command_id, cancel_probe=agent_pb2.CancelProbe(probe_id=probe_id))))
        elif pend.served:
            self._stop_target(req)      # no source to answer: nothing else will stop the server
        return True

    def on_ack(self, ack: agent_pb2.CommandAck, node: str) -> bool:
        """An agent's answer to a command; False when it answers a command sent to another node."""
        waiting = self._acks.get(ack.command_id)
        if waiting is not None:
            to, fut = waiting
            if to != node:
                return False
            if ack.command_id.endswith((":stop", ":cancel")):
                self._acks.pop(ack.command_id, None)
            if not fut.done():
                fut.set_result(ack)
            return True
        if not ack.accepted:
            self.on_refused(ack, node)
        return True

    def sent_to(self, probe_id: str) -> str | None:
        """The node a running probe was sent to (None: no such probe runs)."""
        pend = self.pending.get(probe_id)
        return pend.request.source_node if pend is not None else None

    def on_result(self, result: common_pb2.ProbeResult, node: str) -> bool:
        """A result from ``node``; False when the probe of that id was sent to another node."""
        pend = self.pending.get(result.probe_id)
        if pend is None:
            return True
        if pend.request.source_node != node:
            return False
        if not pend.result.done():
            pend.result.set_result(result)
        return True

    def on_progress(self, progress: common_pb2.ProbeProgress, node: str) -> bool:
        pend = self.pending.get(progress.probe_id)
        if pend is None:
            return True
        if pend.request.source_node != node:
            return False
        if pend.progress.qsize() < PROGRESS_QUEUE:
            pend.progress.put_nowait(progress)
        return True

    def on_refused(self, ack: agent_pb2.CommandAck, node: str) -> None:
        self.state.log_event("warning", f"refused command {ack.command_id}: {ack.error}", node)
