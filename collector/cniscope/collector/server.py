"""The collector: a grpc.aio server agents stream into and people-facing clients query."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cniscope.api.v1 import agent_pb2, agent_pb2_grpc, cluster_pb2, cluster_pb2_grpc, common_pb2
from cniscope.collector import retention
from cniscope.collector.auth import TokenAuthInterceptor
from cniscope.collector.collector_metrics import CollectorMetrics, IngestCounters
from cniscope.collector.dispatcher import Dispatcher
from cniscope.collector.groupcommit import GroupCommitter
from cniscope.collector.ratelimit import TokenBucket
from cniscope.collector.runs.api import RunsService
from cniscope.collector.state import ClusterState, Outgoing, Session
from cniscope.collector.store import Store
from cniscope.collector.validate import Refused, check_batch, check_capabilities, check_hello
from cniscope.core import grpcutil, netpolicy, security
from cniscope.core.config import CollectorConfig, read_token
from cniscope.core.errors import CniscopeError, ConfigError, StoreError, ValidationError
from cniscope.core.metricshttp import MetricsServer
from cniscope.core.version import VERSION

log = logging.getLogger("cniscope.collector")


SETTLE_CHUNK = 32   # nodes brought up to date per event-loop turn by the sweep
ACK_INTERVAL = 0.02  # seconds: a stream with acks due more often gets one cumulative ack per interval
MAX_INFLIGHT = 256  # batches one stream may have read ahead of their commit


def _serialize(m: agent_pb2.CollectorMessage | bytes) -> bytes:
    return m if isinstance(m, bytes) else m.SerializeToString()


def add_agent_hub(servicer: AgentHubService, server: grpc.aio.Server) -> None:
    """AgentHub as generated, except that a stream may also yield pre-encoded bytes: a peer table
    broadcast to a thousand agents is encoded once, not once per stream."""
    handlers = {"Connect": grpc.stream_stream_rpc_method_handler(
        servicer.Connect, request_deserializer=agent_pb2.AgentMessage.FromString, response_serializer=_serialize)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("cniscope.api.v1.AgentHub", handlers),))
    server.add_registered_method_handlers("cniscope.api.v1.AgentHub", handlers)


def _status(name: str) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, name, grpc.StatusCode.INTERNAL)


class AgentHubService(agent_pb2_grpc.AgentHubServicer):
    def __init__(self, state: ClusterState, store: Store, dispatcher: Dispatcher,
                 counters: IngestCounters | None = None) -> None:
        self.state = state
        self.store = store
        self.dispatcher = dispatcher
        self.counters = counters or IngestCounters()
        self.committer = GroupCommitter(store, counters=self.counters)

    async def Connect(self, request_iterator: AsyncIterator[agent_pb2.AgentMessage],  # type: ignore[override]  # noqa: N802
                      context: grpc.aio.ServicerContext) -> AsyncIterator[Outgoing]:  # type: ignore[type-arg]
        peer = context.peer()
        it = request_iterator.__aiter__()
        try:
            first = await asyncio.wait_for(it.__anext__(), timeout=30)
        except (StopAsyncIteration, TimeoutError):
            return
        except DecodeError:
            self.counters.refused += 1
            self.state.log_event("warning", f"refused an undecodable first message from {peer}")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "message is not a valid AgentMessage")
        if first.WhichOneof("body") != "hello":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the first message must be Hello")
        hello = first.hello
        try:
            check_hello(hello)
        except Refused as exc:
            self.counters.refused += 1
            self.state.log_event("warning", f"refused hello from {peer}: {exc}")
            await context.abort(_status(exc.code), str(exc))
        current = self.state.sessions.get(hello.node)
        if current is not None and current.boot_id != hello.boot_id:
            self.counters.refused += 1
            self.state.log_event("warning", f"refused a second agent claiming node {hello.node} from {peer}",
                                 hello.node)
            await context.abort(grpc.StatusCode.ALREADY_EXISTS,
                                f"node {hello.node} is already connected with another boot id")
        if current is not None:  # the same agent reconnecting over a half-dead stream
            current.close()
        now = time.time_ns()
        acked = await self.store.call(self.store.record_hello, hello, now)
        replay = [b for b in dict.fromkeys(hello.replay_boot_ids) if b != hello.boot_id]
        replay_acked = await self.store.call(self.store.replay_acked, hello.node, replay) if replay else {}
        session = Session(hello.node, hello.boot_id, replay_boots=frozenset(replay))
        self.state.connect(hello, session, now)
        self.state.log_event("info", f"agent {hello.agent_version} connected from {peer} "
                                     f"(boot {hello.boot_id[:8]}, durable up to seq {acked})", hello.node)
        if replay:
            self.state.log_event("info", f"agent replays {len(replay)} earlier boot(s) from its disk spool",
                                 hello.node)
        yield agent_pb2.CollectorMessage(welcome=agent_pb2.Welcome(
            time_unix_nano=time.time_ns(), collector_version=VERSION, acked_seq=acked,
            replay_acked=replay_acked))
        reader = asyncio.create_task(self._read(it, session, context))
        reader.add_done_callback(lambda _: session.wake.set())
        loop = asyncio.get_running_loop()
        last_ack = 0.0
        try:
            while True:
                # one event wakes the writer for anything it must do: a message to send, the session
                # closed, the reader finished (cheaper than racing three futures per wake-up)
                await session.wake.wait()
                session.wake.clear()
                while not session.outbox.empty():
                    yield session.outbox.get_nowait()
                if session.acks:  # after the messages queued before them, as they were committed
                    done = session.closed.is_set() or reader.done()
                    hold = last_ack + ACK_INTERVAL - loop.time()
                    if hold > 0 and not done:
                        # a busy stream: one cumulative ack per interval instead of one per commit
                        # (an ack costs the collector about as much as reading a batch)
                        await asyncio.sleep(hold)
                        while not session.outbox.empty():
                            yield session.outbox.get_nowait()
                    for out in session.take_acks():
                        self.counters.acks += 1
                        yield out
                    last_ack = loop.time()
                if session.closed.is_set() or reader.done():
                    break
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            self.state.disconnect(session)
            if self.state.sessions.get(hello.node) is None:
                self.state.log_event("info", "agent disconnected", hello.node)
        if reader.done() and not reader.cancelled():
            failure = reader.exception()
            if isinstance(failure, Refused):
                await context.abort(_status(failure.code), str(failure))

    async def _read(self, it: AsyncIterator[agent_pb2.AgentMessage], session: Session,
                    context: grpc.aio.ServicerContext) -> None:  # type: ignore[type-arg]
        try:
            async for msg in it:
                await self._on_message(msg, session)
            while session.inflight:  # the agent finished sending: ack what it sent first
                session.drained.clear()
                await session.drained.wait()
        except DecodeError:
            self.counters.refused += 1
            self.state.log_event("warning", "refused an undecodable message", session.node)
            raise Refused("INVALID_ARGUMENT", "message is not a valid AgentMessage") from None

    def _committed(self, session: Session, b: agent_pb2.Batch, now: int, outcome: bool | BaseException) -> None:
        """A batch's commit finished (calls come in submission order): ack it, then apply it."""
        session.inflight -= 1
        if session.inflight < MAX_INFLIGHT:
            session.drained.set()
        exc = outcome if isinstance(outcome, BaseException) else None
        if exc is not None or session.failure is not None:
            # acks are cumulative: once one batch of the stream is not durable, nothing after it is
            # acked; the stream ends and the agent resends from its last ack
            if session.failure is None and exc is not None:
                session.failure = exc
                self.state.log_event("error", f"store failed, stream closed: {exc}", session.node)
            session.close()
            return
        session.ack(b.boot_id, b.seq)
        if not outcome:
            self.counters.duplicates += 1
            return
        self.counters.batches += 1
        self.counters.samples += len(b.samples)
        self.state.on_batch(session.node, b, now)
        for r in b.probe_results:
            self.dispatcher.on_result(r)
            self.state.on_probe_result(r)

    async def _on_message(self, msg: agent_pb2.AgentMessage, session: Session) -> None:
        which = msg.WhichOneof("body")
        if which == "batch":
            b = msg.batch
            try:
                check_batch(b, session.boot_id, session.replay_boots)
            except Refused as exc:
                self.counters.refused += 1
                self.state.log_event("warning", f"refused batch: {exc}", session.node)
                raise
            now = time.time_ns()
            session.inflight += 1
            self.committer.submit(session.node, b, now, functools.partial(self._committed, session, b, now))
            if session.inflight >= MAX_INFLIGHT:  # read ahead of commits, but only so far
                session.drained.clear()
                await session.drained.wait()
            if session.failure is not None:
                raise session.failure
        elif which == "probe_progress":
            self.dispatcher.on_progress(msg.probe_progress)
            self.state.publish(cluster_pb2.ClusterEvent(probe_progress=msg.probe_progress))
        elif which == "command_ack":
            self.dispatcher.on_ack(msg.command_ack, session.node)
        elif which == "capabilities":
            try:
                check_capabilities(msg.capabilities)
            except Refused:
                self.counters.refused += 1
                raise
            await self.store.call(self.store.record_capabilities, session.node, session.boot_id,
                                  msg.capabilities, time.time_ns())
            self.state.on_capabilities(session.node, msg.capabilities)
        elif which == "hello":
            raise Refused("FAILED_PRECONDITION", "a second Hello on the same stream")
        # an unknown body (newer agent) is ignored: forward compatible


class ClusterService(cluster_pb2_grpc.ClusterServicer):
    def __init__(self, state: ClusterState, store: Store, dispatcher: Dispatcher, address: str,
                 limiter: TokenBucket | None = None, allow_cidrs: str = "198.18.0.0/15") -> None:
        self.state = state
        self.store = store
        self.dispatcher = dispatcher
        self.address = address
        self.limiter = limiter
        self.allow_cidrs = allow_cidrs

    async def admit(self, request: common_pb2.ProbeRequest, context: grpc.aio.ServicerContext) -> None:  # type: ignore[type-arg]
        """Rate limit, then refuse a forbidden explicit target before anything reaches an agent."""
        if self.limiter is not None:
            wait = self.limiter.take()
            if wait > 0:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    f"probe rate limit: at most {self.limiter.rate:g}/s with bursts of "
                                    f"{self.limiter.burst}; retry in {wait:.2f}s")
        if request.target_address:
            peers = [a for st in self.state.nodes.values() for a in (st.host_ip, st.pod_ip) if a]
            try:
                await asyncio.to_thread(netpolicy.check_target, request.target_address, peers, self.allow_cidrs)
            except ValidationError as exc:
                self.state.log_event("warning", f"refused probe target from {context.peer()}: {exc}")
                await context.abort(_status(exc.grpc_status), f"{exc.title}: {exc}")

    async def Watch(self, request: cluster_pb2.WatchRequest,  # noqa: N802
                    context: grpc.aio.ServicerContext) -> AsyncIterator[cluster_pb2.ClusterEvent]:  # type: ignore[type-arg]
        q = self.state.subscribe()
        try:
            for st in sorted(self.state.nodes.values(), key=lambda s: s.node):
                yield cluster_pb2.ClusterEvent(node=st)
            for ev in self.state.recent_logs[-50:]:
                yield cluster_pb2.ClusterEvent(log=ev)
            yield cluster_pb2.ClusterEvent(snapshot_done=cluster_pb2.SnapshotDone(
                collector_version=VERSION, collector_address=self.address))
            while True:
                event = await q.get()
                if event.WhichOneof("body") == "samples" and not request.include_samples:
                    continue
                yield event
        finally:
            self.state.unsubscribe(q)

    async def ListNodes(self, request: cluster_pb2.ListNodesRequest,  # noqa: N802
                        context: grpc.aio.ServicerContext) -> cluster_pb2.ListNodesResponse:  # type: ignore[type-arg]
        self.state.settle()
        return cluster_pb2.ListNodesResponse(nodes=[self.state.nodes[n] for n in sorted(self.state.nodes)])

    async def GetNode(self, request: cluster_pb2.GetNodeRequest,  # noqa: N802
                      context: grpc.aio.ServicerContext) -> cluster_pb2.NodeState:  # type: ignore[type-arg]
        self.state.settle(request.node)
        st = self.state.nodes.get(request.node)
        if st is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"node {request.node!r} is unknown")
        assert st is not None
        return st

    async def RunProbe(self, request: common_pb2.ProbeRequest,  # noqa: N802
                       context: grpc.aio.ServicerContext) -> AsyncIterator[cluster_pb2.ProbeUpdate]:  # type: ignore[type-arg]
        await self.admit(request, context)
        try:
            async for upd in self.dispatcher.run(request):
                yield upd
        except CniscopeError as exc:
            await context.abort(_status(exc.grpc_status), f"{exc.title}: {exc}")

    async def ListProbeResults(self, request: cluster_pb2.ListProbeResultsRequest,  # noqa: N802
                               context: grpc.aio.ServicerContext) -> cluster_pb2.ListProbeResultsResponse:  # type: ignore[type-arg]
        rows = await self.store.call(self.store.probe_results, request.kind, request.source_node,
                                     request.target_node, request.limit or 100)
        return cluster_pb2.ListProbeResultsResponse(results=rows)


class Collector:
    def __init__(self, cfg: CollectorConfig, listen: Sequence[str] | None = None) -> None:
        self.cfg = cfg
        self.listen = list(listen or [cfg.listen])
        self.store = Store(cfg.db)
        self.state = ClusterState(stale_after=cfg.stale_after)
        self.dispatcher = Dispatcher(self.state, self.store)
        self.server: grpc.aio.Server | None = None
        self.runs: RunsService | None = None
        self.hub: AgentHubService | None = None
        self.ports: list[int] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._pruner: asyncio.Task[None] | None = None
        self.counters = IngestCounters()
        self.metrics = CollectorMetrics(self.state, self.counters)
        self.metrics_server: MetricsServer | None = None
        self.limiter = TokenBucket(cfg.probe_rate, cfg.probe_burst)
        token = read_token(cfg.token_file)
        self.auth = TokenAuthInterceptor(token) if token else None
        self.credentials = security.server_credentials(cfg.tls_cert, cfg.tls_key, cfg.tls_ca)

    async def start(self) -> None:
        server = grpc.aio.server(options=grpcutil.server_options(max_message=self.cfg.max_message_bytes),
                                 interceptors=[self.auth] if self.auth else None)
        self.hub = AgentHubService(self.state, self.store, self.dispatcher, self.counters)
        add_agent_hub(self.hub, server)
        cluster_pb2_grpc.add_ClusterServicer_to_server(
            ClusterService(self.state, self.store, self.dispatcher, self.listen[0], self.limiter,
                           self.cfg.allow_cidrs), server)
        from cniscope.api.v1 import runs_pb2, runs_pb2_grpc
        from cniscope.collector.runs import run_store as runs_store

        await self.store.call(runs_store.mark_interrupted, self.store.conn, time.time_ns())
        self.runs = RunsService(self.state, self.store, self.dispatcher)
        runs_pb2_grpc.add_RunsServicer_to_server(self.runs, server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        names = [
            agent_pb2.DESCRIPTOR.services_by_name["AgentHub"].full_name,
            cluster_pb2.DESCRIPTOR.services_by_name["Cluster"].full_name,
            runs_pb2.DESCRIPTOR.services_by_name["Runs"].full_name,
            health.SERVICE_NAME,
            reflection.SERVICE_NAME,
        ]
        reflection.enable_server_reflection(names, server)
        for addr in self.listen:
            target = grpcutil.normalize_address(addr)
            if target.startswith("unix://"):
                _prepare_socket(Path(target[len("unix://"):]))
            try:
                if self.credentials is not None and not target.startswith("unix"):
                    port = server.add_secure_port(target, self.credentials)
                else:  # a unix socket is guarded by file permissions (and the token)
                    port = server.add_insecure_port(target)
            except RuntimeError as exc:
                raise ConfigError(f"cannot listen on {addr}: {exc}") from None
            if port == 0 and not target.startswith("unix"):
                raise ConfigError(f"cannot listen on {addr}: address in use or not available here")
            self.ports.append(port)
        await server.start()
        for svc in ["", *names[:3]]:
            await health_servicer.set(svc, health_pb2.HealthCheckResponse.SERVING)
        self.server = server
        self._sweeper = asyncio.create_task(self._sweep())
        self._pruner = asyncio.create_task(self._prune_loop())
        self.metrics.start()
        if self.cfg.metrics_listen:
            self.metrics_server = MetricsServer(self.metrics.registry, self.cfg.metrics_listen)
            await self.metrics_server.start()
        log.info("cniscope collector %s listening on %s (db %s)", VERSION, ", ".join(self.listen), self.cfg.db)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            # bring the latest-value state up to date a few nodes at a time, so acks on other
            # streams never wait behind a thousand nodes' worth of figures
            for chunk in self.state.pending_chunks(SETTLE_CHUNK):
                self.state.settle_nodes(chunk)
                await asyncio.sleep(0)
            self.state.sweep(time.time_ns())

    async def prune(self, now_ns: int | None = None) -> retention.PruneReport:
        """Apply retention once: raw samples older than retention_hours become per-minute aggregates."""
        now = now_ns or time.time_ns()
        cutoff = now - int(self.cfg.retention_hours * 3600e9)
        total = retention.PruneReport()
        nodes = await self.store.call(retention.nodes_with_samples, self.store.conn)
        for node in nodes:  # one node per transaction: ingest commits interleave
            rep = await self.store.call(retention.prune_node, self.store.conn, node, cutoff, self.store.watermarks)
            total.samples_aggregated += rep.samples_aggregated
            total.samples_deleted += rep.samples_deleted
            total.batches_deleted += rep.batches_deleted
        agg_cutoff = now - int(retention.AGGREGATE_DAYS * 86400e9)
        total.aggregates_deleted = await self.store.call(retention.prune_aggregates, self.store.conn, agg_cutoff)
        return total

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(retention.PRUNE_EVERY)
            try:
                rep = await self.prune()
                if rep.samples_deleted:
                    log.info("retention: %d raw samples → %d per-minute aggregates, %d batch rows pruned",
                             rep.samples_deleted, rep.samples_aggregated, rep.batches_deleted)
            except Exception:  # retention never stops ingest
                log.exception("retention pass failed")

    async def stop(self, grace: float = 1.0) -> None:
        if self.runs is not None:  # a run stops its probes and removes its rules before the store closes
            await self.runs.manager.stop_all()
        for t in (self._sweeper, self._pruner):
            if t is not None:
                t.cancel()
        await self.metrics.stop()
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        if self.server is not None:
            await self.server.stop(grace)
        if self.hub is not None:
            await self.hub.committer.stop()
        self.store.close()

    async def wait(self) -> None:
        assert self.server is not None
        await self.server.wait_for_termination()


def _prepare_socket(sock: Path) -> None:
    sock.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        sock.unlink()


def check_db_path(path: str) -> None:
    """Fail fast, with one clear line, when the database cannot be written."""
    if path == ":memory:":
        return
    p = Path(path)
    parent = p.resolve().parent
    if not parent.is_dir():
        raise StoreError(f"cannot open database {path}: directory {parent} does not exist")
    if p.exists() and not os.access(p, os.W_OK):
        raise StoreError(f"cannot open database {path}: not writable")
    if not p.exists() and not os.access(parent, os.W_OK):
        raise StoreError(f"cannot open database {path}: directory {parent} is not writable")


async def run_collector(cfg: CollectorConfig, listen: Sequence[str] | None = None) -> None:
    check_db_path(cfg.db)
    c = Collector(cfg, listen)
    await c.start()
    try:
        await c.wait()
    finally:
        await c.stop()
