"""AgentHub: the bidirectional stream every agent keeps open to the collector.

The first message must be a valid Hello, within ``HELLO_SECONDS``, from a caller that may speak for
its node and can prove its boot (:mod:`.hello_admission`); then batches are committed in groups
(:mod:`.groupcommit`) and acknowledged cumulatively once durable, at most one ack per
``ACK_INTERVAL`` on a busy stream; a stream reads at most ``READ_AHEAD_BYTES`` of batches (and
``MAX_INFLIGHT`` of them) ahead of their commit. Probe progress, command acks and
capability reports go to the dispatcher, the store and the cluster state. A refused batch is answered
with a typed ``Refusal`` (the agent drops it, the stream carries on); any other refused message ends
only its own stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from cniscope.api.v1 import agent_pb2, agent_pb2_grpc, cluster_pb2
from cniscope.collector import auth
from cniscope.collector.boot_keys import BootKeys
from cniscope.collector.collector_metrics import IngestCounters
from cniscope.collector.dispatcher import Dispatcher
from cniscope.collector.groupcommit import GroupCommitter
from cniscope.collector.hello_admission import HelloAdmission, boots_of, check_capability_size, stored_hello
from cniscope.collector.principals import Principal
from cniscope.collector.state import ClusterState, Outgoing, Session
from cniscope.collector.store import Store
from cniscope.collector.validate import MAX_ID, Refused, check_batch, check_capabilities, check_hello
from cniscope.core import grpcutil
from cniscope.core.version import VERSION

ACK_INTERVAL = 0.02  # seconds: a stream with acks due more often gets one cumulative ack per interval
MAX_INFLIGHT = 256  # batches one stream may have read ahead of their commit
READ_AHEAD_BYTES = 1024 * 1024  # encoded batches one stream may have read ahead of their commit (and one more)
HELLO_SECONDS = 5.0  # a stream that has not said Hello by then is ended
CONNECT_METHOD = "/cniscope.api.v1.AgentHub/Connect"
Admit = Callable[[str, Any], Awaitable[Principal]]
MAX_REASON = 512    # characters of a refusal's reason sent back to the agent


def _serialize(m: agent_pb2.CollectorMessage | bytes) -> bytes:
    return m if isinstance(m, bytes) else m.SerializeToString()


def _deserialize(raw: bytes) -> tuple[agent_pb2.AgentMessage, int]:
    """A message and its encoded size, which bounds a stream's read-ahead without re-measuring it."""
    return agent_pb2.AgentMessage.FromString(raw), len(raw)


Incoming = tuple[agent_pb2.AgentMessage, int]


def add_agent_hub(servicer: AgentHubService, server: grpc.aio.Server) -> None:
    """AgentHub as generated, except that a stream may also yield pre-encoded bytes: a peer table
    broadcast to a thousand agents is encoded once, not once per stream."""
    handlers = {"Connect": grpc.stream_stream_rpc_method_handler(
        servicer.Connect, request_deserializer=_deserialize, response_serializer=_serialize)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("cniscope.api.v1.AgentHub", handlers),))
    server.add_registered_method_handlers("cniscope.api.v1.AgentHub", handlers)


class AgentHubService(agent_pb2_grpc.AgentHubServicer):
    def __init__(self, state: ClusterState, store: Store, dispatcher: Dispatcher,
                 counters: IngestCounters | None = None, boot_keys: BootKeys | None = None,
                 max_capability_bytes: int = 1024 * 1024, admit: Admit | None = None) -> None:
        self.state = state
        self.store = store
        self.dispatcher = dispatcher
        self.counters = counters or IngestCounters()
        self.committer = GroupCommitter(store, counters=self.counters)
        self.boot_keys = boot_keys or BootKeys(store)
        self.admission = HelloAdmission(self.boot_keys, dispatcher, max_capability_bytes)
        self.admit = admit  # who is calling (aborts a caller that may not connect); None: anyone

    async def Connect(self, request_iterator: AsyncIterator[Incoming],  # type: ignore[override]  # noqa: N802
                      context: grpc.aio.ServicerContext) -> AsyncIterator[Outgoing]:  # type: ignore[type-arg]
        peer = context.peer()
        who = await self.admit(CONNECT_METHOD, context) if self.admit is not None else auth.current()
        # admitted: the response headers say so at once, so a caller may wait for them before sending
        # its Hello (a refused caller gets a trailers-only answer with the refusal's own status, which a
        # Hello written into the closing stream could otherwise turn into a client-side INTERNAL)
        await context.send_initial_metadata((grpcutil.ADMITTED_HEADER,))
        it = request_iterator.__aiter__()
        try:
            first, _ = await asyncio.wait_for(it.__anext__(), timeout=HELLO_SECONDS)
        except StopAsyncIteration:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the stream ended before its Hello")
        except TimeoutError:
            self.counters.refused += 1
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                                f"no Hello within {HELLO_SECONDS:g}s of opening the stream")
        except DecodeError:
            self.counters.refused += 1
            self.state.log_event("warning", f"refused an undecodable first message from {peer}")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "message is not a valid AgentMessage")
        if first.WhichOneof("body") != "hello":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the first message must be Hello")
        hello = first.hello
        try:
            check_hello(hello)
            self.admission.check(hello, who)
        except Refused as exc:
            self.counters.refused += 1
            self.state.log_event("warning", f"refused hello from {peer}: {exc}")
            await context.abort(grpcutil.status_code(exc.code), str(exc))
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
        acked = await self.store.call(self.store.record_hello, stored_hello(hello), now)
        await self.boot_keys.bind(hello.node, boots_of(hello), now)
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
                    yield session.take()
                if session.acks:  # after the messages queued before them, as they were committed
                    done = session.closed.is_set() or reader.done()
                    hold = last_ack + ACK_INTERVAL - loop.time()
                    if hold > 0 and not done:
                        # a busy stream: one cumulative ack per interval instead of one per commit
                        # (an ack costs the collector about as much as reading a batch)
                        await asyncio.sleep(hold)
                        while not session.outbox.empty():
                            yield session.take()
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
                await context.abort(grpcutil.status_code(failure.code), str(failure))

    async def _read(self, it: AsyncIterator[Incoming], session: Session,
                    context: grpc.aio.ServicerContext) -> None:  # type: ignore[type-arg]
        try:
            async for msg, size in it:
                await self._on_message(msg, size, session)
            while session.inflight:  # the agent finished sending: ack what it sent first
                session.drained.clear()
                await session.drained.wait()
        except DecodeError:
            self.counters.refused += 1
            self.state.log_event("warning", "refused an undecodable message", session.node)
            raise Refused("INVALID_ARGUMENT", "message is not a valid AgentMessage") from None

    def _committed(self, session: Session, b: agent_pb2.Batch, size: int, now: int,
                   outcome: bool | BaseException) -> None:
        """A batch's commit finished (calls come in submission order): ack it, then apply it."""
        session.inflight -= 1
        session.inflight_bytes -= size
        if session.inflight < MAX_INFLIGHT and session.inflight_bytes < READ_AHEAD_BYTES:
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
            self.dispatcher.on_result(r, session.node)
            self.state.on_probe_result(r)

    def _foreign(self, session: Session, why: str) -> Refused:
        self.counters.refused += 1
        self.state.log_event("warning", f"refused: {why}", session.node)
        return Refused("PERMISSION_DENIED", why)

    async def _on_message(self, msg: agent_pb2.AgentMessage, size: int, session: Session) -> None:
        which = msg.WhichOneof("body")
        if which == "batch":
            b = msg.batch
            try:
                check_batch(b, session.boot_id, session.replay_boots)
            except Refused as exc:
                self.counters.refused += 1
                self.state.log_event("warning", f"refused batch {b.boot_id[:16]}/{b.seq}: {exc}", session.node)
                # a typed refusal: the agent drops this one batch and the stream carries on
                refusal = agent_pb2.Refusal(boot_id=b.boot_id, seq=b.seq, code=exc.code, reason=str(exc)[:MAX_REASON])
                if len(b.boot_id) > MAX_ID or not session.send(agent_pb2.CollectorMessage(refused=refusal)):
                    raise  # not a batch the agent could recognise, or the agent does not read: end the stream
                return
            foreign = self.admission.foreign_results(session.node, b)
            if foreign is not None:  # another node's results: a forgery, not a broken batch
                raise self._foreign(session, foreign)
            now = time.time_ns()
            session.inflight += 1
            session.inflight_bytes += size
            self.committer.submit(session.node, b, now, functools.partial(self._committed, session, b, size, now))
            if session.inflight >= MAX_INFLIGHT or session.inflight_bytes >= READ_AHEAD_BYTES:
                # read ahead of commits, but only so far
                session.drained.clear()
                await session.drained.wait()
            if session.failure is not None:
                raise session.failure
        elif which == "probe_progress":
            p = msg.probe_progress
            if not self.dispatcher.on_progress(p, session.node):
                raise self._foreign(session, f"progress for probe {p.probe_id[:64]!r}, which was sent to "
                                             f"node {self.dispatcher.sent_to(p.probe_id)}")
            self.state.publish(cluster_pb2.ClusterEvent(probe_progress=p))
        elif which == "command_ack":
            if not self.dispatcher.on_ack(msg.command_ack, session.node):
                raise self._foreign(session, f"an answer to command {msg.command_ack.command_id[:64]!r}, "
                                             "which was sent to another node")
        elif which == "capabilities":
            try:
                check_capabilities(msg.capabilities)
                check_capability_size(session.node, msg.capabilities, self.admission.max_capability_bytes)
            except Refused:
                self.counters.refused += 1
                raise
            await self.store.call(self.store.record_capabilities, session.node, session.boot_id,
                                  msg.capabilities, time.time_ns())
            self.state.on_capabilities(session.node, msg.capabilities)
        elif which == "hello":
            raise Refused("FAILED_PRECONDITION", "a second Hello on the same stream")
        # an unknown body (newer agent) is ignored: forward compatible
