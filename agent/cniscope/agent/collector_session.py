"""The agent's one long-lived stream to the collector (``AgentHub.Connect``), kept up for good.

A session says ``Hello``, takes the ``Welcome`` (acks of what the collector already holds, and the
clock offset measured over that round trip), then sends every spooled batch in order and whatever
else is posted, while it reads acks, the peer table and commands. It ends on a stream error, a
rotated TLS file or a new probe-pod address; the next one starts after an exponential backoff with
jitter (at once for a rotation or a new address). Nothing here depends on the collector being up,
and no way a stream can end (a status, a write to a finished call, a bug) ends the loop.

A batch the collector refuses for good comes back as a typed ``Refusal``: it is logged, counted
(``Spool.refused``) and dropped from the spool, never resent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from cniscope.agent.backoff import Backoff
from cniscope.agent.boot_proof import BootProof
from cniscope.agent.spool import Spool
from cniscope.api.v1 import agent_pb2, agent_pb2_grpc, common_pb2
from cniscope.core import grpcutil, security
from cniscope.core.config import AgentConfig, read_token
from cniscope.core.errors import CniscopeError
from cniscope.core.version import VERSION

log = logging.getLogger("cniscope.agent")

CLOCK_OFFSET_SAMPLE = "agent_clock_offset_ms"  # agent minus collector, measured over the Welcome round trip
CERT_POLL_SECONDS = 2.0   # how often the agent looks for a rotated TLS certificate
ADMISSION_SECONDS = 5.0   # how long a new stream waits for the collector's response headers before its Hello
OUTBOX_MESSAGES = 1000    # acks, progress and reports waiting for the stream; beyond it they are dropped

Call = grpc.aio.StreamStreamCall[agent_pb2.AgentMessage, agent_pb2.CollectorMessage]


class CertificateRotated(Exception):
    """A TLS file changed on disk: the channel is rebuilt with the new credentials."""


class AddressesChanged(Exception):
    """This node's probe pod was replaced: reconnect, so the Hello carries the new pod address."""


class StreamEnded(Exception):
    """The call finished (the collector's status says why) while this side still had something to send."""


class CollectorSession:
    def __init__(self, cfg: AgentConfig, boot_id: str, spool: Spool, wake: asyncio.Event,
                 peers: dict[str, common_pb2.Peer], *,
                 capabilities: Callable[[], common_pb2.CapabilityReport | None],
                 on_command: Callable[[agent_pb2.Command], Awaitable[None]]) -> None:
        """``wake`` is set when a batch is sealed; ``peers`` is updated in place from the collector's
        peer table; ``capabilities()`` is the report the next Hello carries."""
        self.cfg = cfg
        self.boot_id = boot_id
        self.spool = spool
        self.wake = wake
        self.peers = peers
        self.peer_version = 0
        self.capabilities = capabilities
        self.on_command = on_command
        self.backoff = Backoff(cfg.backoff_initial, cfg.backoff_factor, cfg.backoff_max, cfg.backoff_jitter)
        self.connected = asyncio.Event()
        self.reconnects = 0
        self.retry_delays: list[float] = []          # the last 100, for tests and status
        self.clock_offset_ms = 0.0
        self.clock_rtt_ms: float | None = None
        self.outbox: asyncio.Queue[agent_pb2.AgentMessage] = asyncio.Queue(maxsize=OUTBOX_MESSAGES)
        self._token = read_token(cfg.token_file)
        self._proof = BootProof(cfg.node, cfg.spool_path)
        self._readdress = asyncio.Event()

    def post(self, msg: agent_pb2.AgentMessage) -> None:
        """Send ``msg`` on the stream when it is up (acks, progress, reports: not spooled)."""
        try:
            self.outbox.put_nowait(msg)
        except asyncio.QueueFull:
            log.warning("outbox full; dropping a %s", msg.WhichOneof("body"))

    def readdress(self) -> None:
        """This node's addresses changed: end the session so that a new Hello carries them."""
        self._readdress.set()

    def own_samples(self, now_ns: int) -> list[common_pb2.Sample]:
        """The spool's and the stream's own figures, sent with every sample batch."""
        out = [
            common_pb2.Sample(name="agent_spool_depth", value=self.spool.depth, time_unix_nano=now_ns),
            common_pb2.Sample(name="agent_spool_dropped", value=self.spool.dropped, time_unix_nano=now_ns),
            common_pb2.Sample(name="agent_reconnects", value=self.reconnects, time_unix_nano=now_ns),
        ]
        if self.clock_rtt_ms is not None:
            out += [common_pb2.Sample(name=CLOCK_OFFSET_SAMPLE, value=self.clock_offset_ms, time_unix_nano=now_ns),
                    common_pb2.Sample(name="agent_clock_rtt_ms", value=self.clock_rtt_ms, time_unix_nano=now_ns)]
        return out

    def hello(self) -> agent_pb2.AgentMessage:
        h = agent_pb2.Hello(
            node=self.cfg.node, boot_id=self.boot_id, agent_version=VERSION,
            host_ip=self.cfg.host_ip, pod_ip=self.cfg.pod_ip, time_unix_nano=time.time_ns(),
            spool_dropped=self.spool.dropped, replay_boot_ids=self.spool.other_boots(),
            boot_key=self._proof.key(self.boot_id),
        )
        for b in h.replay_boot_ids:
            h.replay_boot_keys[b] = self._proof.key(b)
        report = self.capabilities()
        if report is not None:
            h.capabilities.CopyFrom(report)
        return agent_pb2.AgentMessage(hello=h)

    async def connection_loop(self) -> None:
        while True:
            try:
                await self._session()
                reason = "stream ended"
            except (CertificateRotated, AddressesChanged) as exc:
                log.info("%s; rebuilding the channel", exc)
                self.connected.clear()
                self.reconnects += 1
                continue
            except grpc.aio.AioRpcError as exc:
                reason = f"{exc.code().name}: {exc.details()}"
            except (OSError, CniscopeError, StreamEnded) as exc:
                reason = str(exc)
            except Exception as exc:  # whatever ends a stream, the agent reconnects and keeps its spool
                log.exception("collector stream failed unexpectedly")
                reason = f"{type(exc).__name__}: {exc}"
            self.connected.clear()
            delay = self.backoff.next_delay()
            self.retry_delays.append(delay)
            del self.retry_delays[:-100]
            log.warning("collector %s unreachable (%s); retrying in %.1fs (attempt %d, %d batches spooled)",
                        self.cfg.collector, reason, delay, self.backoff.attempt, self.spool.depth)
            await asyncio.sleep(delay)
            self.reconnects += 1

    def _tls_files(self) -> tuple[str, ...]:
        return tuple(p for p in (self.cfg.tls_ca, self.cfg.tls_cert, self.cfg.tls_key) if p)

    async def _watch_certificates(self, sig: tuple[tuple[str, int, int], ...]) -> None:
        """``sig`` is the files' signature taken before the channel's credentials were read: a
        rotation while the channel was being set up is noticed too."""
        files = self._tls_files()
        while True:
            await asyncio.sleep(CERT_POLL_SECONDS)
            if security.files_signature(*files) != sig:
                raise CertificateRotated(f"TLS files changed ({', '.join(files)})")

    async def _await_readdress(self) -> None:
        await self._readdress.wait()
        self._readdress.clear()
        raise AddressesChanged(f"probe pod address now {self.cfg.pod_ip}")

    async def _session(self) -> None:
        opts = grpcutil.client_options(keepalive_time=self.cfg.keepalive_time,
                                       keepalive_timeout=self.cfg.keepalive_timeout)
        tls_sig = security.files_signature(*self._tls_files())
        creds = security.client_credentials(self.cfg.tls_ca, self.cfg.tls_cert, self.cfg.tls_key)
        async with grpcutil.insecure_channel(self.cfg.collector, opts, creds) as channel:
            stub = agent_pb2_grpc.AgentHubStub(channel)
            if self.cfg.token_file:  # read again for every stream: a projected token is rotated on disk
                self._token = read_token(self.cfg.token_file)
            metadata = (("x-cniscope-node", self.cfg.node), *security.bearer_metadata(self._token))
            call = stub.Connect(metadata=metadata)
            await self._welcome(call)
            tasks = {asyncio.create_task(self._send_loop(call)), asyncio.create_task(self._consume(call)),
                     asyncio.create_task(self._await_readdress())}
            if self._tls_files():
                tasks.add(asyncio.create_task(self._watch_certificates(tls_sig)))
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                call.cancel()
            for t in done:
                if not t.cancelled() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]

    @staticmethod
    async def _write(call: Call, msg: agent_pb2.AgentMessage) -> None:
        try:
            await call.write(msg)
        except asyncio.InvalidStateError:  # the call already finished: say with which status
            code, details = await call.code(), await call.details()
            raise StreamEnded(f"stream ended by the collector ({code.name}: {details})") from None

    async def _admitted(self, call: Call) -> None:
        """Wait for the collector's response headers before the first write. An admitted stream gets
        them at once; a refused one ends with a trailers-only answer, whose status (UNAUTHENTICATED,
        PERMISSION_DENIED...) is raised here as the collector sent it. Written into a stream being
        refused, the Hello could turn that status into a client-side INTERNAL. A server that sends no
        headers before it reads the Hello (another version, a proxy) is written to after the wait."""
        try:
            headers = await asyncio.wait_for(call.initial_metadata(), ADMISSION_SECONDS)
        except TimeoutError:
            return
        if grpcutil.ADMITTED_HEADER in tuple(headers or ()):
            return
        # no admission: a refusal's status follows its (empty) headers at once, and writing before
        # it arrived would still be a write into a closing stream (grpc/grpc#36066)
        try:
            code = await asyncio.wait_for(call.code(), ADMISSION_SECONDS)
        except TimeoutError:
            return  # a server that keeps the stream open without the header: go on
        raise StreamEnded(f"refused by the collector ({code.name}: {await call.details()})")

    async def _welcome(self, call: Call) -> None:
        await self._admitted(call)
        t_send = time.time_ns()
        await self._write(call, self.hello())
        first = await call.read()
        t_recv = time.time_ns()
        if not isinstance(first, agent_pb2.CollectorMessage) or not first.HasField("welcome"):
            raise CniscopeError("collector closed the stream before welcoming us")
        self.spool.ack(first.welcome.acked_seq)
        for boot, seq in first.welcome.replay_acked.items():
            self.spool.ack(seq, boot)
        self.connected.set()
        self.backoff.reset()
        # NTP-style: the Welcome was stamped between our send and our receive, so the offset is
        # known to within half the round trip, whatever queueing the collector did
        skew_ms = ((t_send + t_recv) / 2 - first.welcome.time_unix_nano) / 1e6
        self.clock_offset_ms, self.clock_rtt_ms = round(skew_ms, 3), round((t_recv - t_send) / 1e6, 3)
        log.info("connected to collector %s as %s (boot %s, %d batches to resend, skew %.1f ms)",
                 self.cfg.collector, self.cfg.node, self.boot_id[:8], self.spool.depth, skew_ms)

    async def _consume(self, call: Call) -> None:
        async for msg in self._read(call):
            which = msg.WhichOneof("body")
            if which == "ack":
                self.spool.ack(msg.ack.seq, msg.ack.boot_id)
            elif which == "refused":
                r = msg.refused
                if self.spool.refuse(r.boot_id, r.seq):
                    log.warning("collector refused batch %s/%d (%s: %s); dropped from the spool, not resent "
                                "(%d refused so far)", r.boot_id[:8], r.seq, r.code, r.reason, self.spool.refused)
            elif which == "peers":
                self.peers.clear()
                self.peers.update((p.node, p) for p in msg.peers.peers)
                self.peer_version = msg.peers.version
            elif which == "command":
                await self.on_command(msg.command)

    @staticmethod
    async def _read(call: Call) -> AsyncIterator[agent_pb2.CollectorMessage]:
        while True:
            msg = await call.read()
            if not isinstance(msg, agent_pb2.CollectorMessage):
                return
            yield msg

    async def _send_loop(self, call: Call) -> None:
        cursor = 0  # everything still spooled goes out first (earlier boots, then this one), in order
        while True:
            self.wake.clear()
            batches, cursor = self.spool.after(cursor)
            for b in batches:
                await self._write(call, agent_pb2.AgentMessage(batch=b))
            while not self.outbox.empty():
                await self._write(call, self.outbox.get_nowait())
            if self.wake.is_set():
                continue
            wake = asyncio.create_task(self.wake.wait())
            out = asyncio.create_task(self.outbox.get())
            try:
                done, _ = await asyncio.wait({wake, out}, return_when=asyncio.FIRST_COMPLETED)
            finally:  # also when the session ends: no waiter outlives it
                for t in (wake, out):
                    t.cancel()
                await asyncio.gather(wake, out, return_exceptions=True)
            if out in done:
                await self._write(call, out.result())
