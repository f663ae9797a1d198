"""The per-node agent: samples, runs probes on command, and streams everything to the collector.

One long-lived bidirectional stream (``AgentHub.Connect``). Every durable thing travels in a
``Batch`` with ``(boot_id, seq)``; batches stay in the spool until the collector acknowledges them,
and are resent after a reconnect. Nothing here depends on the collector being up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator

import grpc

from cniscope.agent import capabilities
from cniscope.agent.backoff import Backoff
from cniscope.agent.probes import PROBES
from cniscope.agent.probes.base import ProbeContext
from cniscope.agent.samplers import SAMPLERS
from cniscope.agent.samplers.base import Sampler
from cniscope.agent.spool import Spool
from cniscope.agent.targets.iperf import IperfServers
from cniscope.api.v1 import agent_pb2, agent_pb2_grpc, common_pb2, targets_pb2
from cniscope.core import grpcutil, netpolicy, probespec
from cniscope.core.config import AgentConfig, read_token
from cniscope.core.errors import CniscopeError
from cniscope.core.hostpaths import HostPaths
from cniscope.core.params import ParamSet
from cniscope.core.version import VERSION

log = logging.getLogger("cniscope.agent")


class Agent:
    def __init__(self, cfg: AgentConfig, paths: HostPaths | None = None) -> None:
        self.cfg = cfg
        self.paths = paths or HostPaths.from_env()
        self.boot_id = uuid.uuid4().hex
        self.seq = 0
        self.spool = Spool(cfg.spool_max_batches, cfg.spool_max_bytes)
        self.backoff = Backoff(cfg.backoff_initial, cfg.backoff_factor, cfg.backoff_max, cfg.backoff_jitter)
        self.peers: dict[str, common_pb2.Peer] = {}
        self.peer_version = 0
        self.samplers: list[Sampler] = [factory() for _, factory in SAMPLERS.items()]
        self.capabilities: common_pb2.CapabilityReport | None = None
        self.reconnects = 0
        self.connected = asyncio.Event()
        self.retry_delays: list[float] = []          # recorded for tests and status
        self._pending_samples: list[common_pb2.Sample] = []
        self._pending_results: list[common_pb2.ProbeResult] = []
        self._pending_events: list[common_pb2.LogEvent] = []
        self._wake = asyncio.Event()
        self._outbox: asyncio.Queue[agent_pb2.AgentMessage] = asyncio.Queue(maxsize=1000)
        self._bandwidth_lock = asyncio.Lock()
        self._probe_tasks: set[asyncio.Task[None]] = set()
        self._token = read_token(cfg.token_file)
        self.iperf_servers = IperfServers()

    # ---- batches -----------------------------------------------------------------------------
    def seal_batch(self) -> agent_pb2.Batch | None:
        if not (self._pending_samples or self._pending_results or self._pending_events):
            return None
        self.seq += 1
        batch = agent_pb2.Batch(
            boot_id=self.boot_id, seq=self.seq, time_unix_nano=time.time_ns(),
            samples=self._pending_samples, probe_results=self._pending_results,
            events=self._pending_events, spool_dropped=self.spool.dropped, spool_depth=self.spool.depth,
        )
        self._pending_samples, self._pending_results, self._pending_events = [], [], []
        self.spool.add(batch)
        self._wake.set()
        return batch

    def _spool_samples(self, now_ns: int) -> list[common_pb2.Sample]:
        return [
            common_pb2.Sample(name="agent_spool_depth", value=self.spool.depth, time_unix_nano=now_ns),
            common_pb2.Sample(name="agent_spool_dropped", value=self.spool.dropped, time_unix_nano=now_ns),
            common_pb2.Sample(name="agent_reconnects", value=self.reconnects, time_unix_nano=now_ns),
        ]

    def _sample_all(self) -> list[common_pb2.Sample]:
        now = time.time_ns()
        out: list[common_pb2.Sample] = []
        for s in self.samplers:
            try:
                out.extend(s.sample(now))
            except Exception as exc:  # one sampler never stops the others
                log.warning("sampler %s failed: %s", s.name, exc)
        return out

    async def sample_loop(self) -> None:
        interval = max(0.1, self.cfg.sample_interval)
        next_t = time.monotonic()
        while True:
            samples = await asyncio.to_thread(self._sample_all)
            self._pending_samples.extend(samples)
            self._pending_samples.extend(self._spool_samples(time.time_ns()))
            self.seal_batch()
            next_t += interval
            delay = next_t - time.monotonic()
            if delay < 0:  # polls never overlap and never pile up
                next_t = time.monotonic()
                delay = 0
            await asyncio.sleep(delay)

    # ---- the stream --------------------------------------------------------------------------
    def hello(self) -> agent_pb2.AgentMessage:
        h = agent_pb2.Hello(
            node=self.cfg.node, boot_id=self.boot_id, agent_version=VERSION,
            host_ip=self.cfg.host_ip, pod_ip=self.cfg.pod_ip, time_unix_nano=time.time_ns(),
            spool_dropped=self.spool.dropped,
        )
        if self.capabilities is not None:
            h.capabilities.CopyFrom(self.capabilities)
        return agent_pb2.AgentMessage(hello=h)

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        md: list[tuple[str, str]] = [("x-cniscope-node", self.cfg.node)]
        if self._token:
            md.append(("authorization", f"Bearer {self._token}"))
        return tuple(md)

    async def connection_loop(self) -> None:
        while True:
            try:
                await self._session()
                reason = "stream ended"
            except grpc.aio.AioRpcError as exc:
                reason = f"{exc.code().name}: {exc.details()}"
            except (OSError, CniscopeError) as exc:
                reason = str(exc)
            self.connected.clear()
            delay = self.backoff.next_delay()
            self.retry_delays.append(delay)
            del self.retry_delays[:-100]
            log.warning("collector %s unreachable (%s); retrying in %.1fs (attempt %d, %d batches spooled)",
                        self.cfg.collector, reason, delay, self.backoff.attempt, self.spool.depth)
            await asyncio.sleep(delay)
            self.reconnects += 1

    async def _session(self) -> None:
        opts = grpcutil.client_options(keepalive_time=self.cfg.keepalive_time,
                                       keepalive_timeout=self.cfg.keepalive_timeout)
        async with grpcutil.insecure_channel(self.cfg.collector, opts) as channel:
            stub = agent_pb2_grpc.AgentHubStub(channel)
            call = stub.Connect(metadata=self._metadata())
            await call.write(self.hello())
            first = await call.read()
            if not isinstance(first, agent_pb2.CollectorMessage) or not first.HasField("welcome"):
                raise CniscopeError("collector closed the stream before welcoming us")
            self.spool.ack(first.welcome.acked_seq)
            self.connected.set()
            self.backoff.reset()
            skew_ms = (time.time_ns() - first.welcome.time_unix_nano) / 1e6
            log.info("connected to collector %s as %s (boot %s, %d batches to resend, skew %.1f ms)",
                     self.cfg.collector, self.cfg.node, self.boot_id[:8], self.spool.depth, skew_ms)
            sender = asyncio.create_task(self._send_loop(call))
            try:
                async for msg in self._read(call):
                    await self._handle(msg)
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                    await sender
                call.cancel()
            if sender.done() and not sender.cancelled() and sender.exception():
                raise sender.exception()  # type: ignore[misc]

    @staticmethod
    async def _read(call: grpc.aio.StreamStreamCall) -> AsyncIterator[agent_pb2.CollectorMessage]:  # type: ignore[type-arg]
        while True:
            msg = await call.read()
            if not isinstance(msg, agent_pb2.CollectorMessage):
                return
            yield msg

    async def _send_loop(self, call: grpc.aio.StreamStreamCall) -> None:  # type: ignore[type-arg]
        sent_upto = self.spool.acked_seq
        while True:
            self._wake.clear()
            for b in self.spool.pending():
                if b.seq > sent_upto:
                    await call.write(agent_pb2.AgentMessage(batch=b))
                    sent_upto = b.seq
            while not self._outbox.empty():
                await call.write(self._outbox.get_nowait())
            if self._wake.is_set():
                continue
            wake = asyncio.create_task(self._wake.wait())
            out = asyncio.create_task(self._outbox.get())
            done, pending = await asyncio.wait({wake, out}, return_when=asyncio.FIRST_COMPLETED)
            for t in pending:
                t.cancel()
            if out in done:
                await call.write(out.result())

    async def _handle(self, msg: agent_pb2.CollectorMessage) -> None:
        which = msg.WhichOneof("body")
        if which == "ack":
            if msg.ack.boot_id == self.boot_id:
                self.spool.ack(msg.ack.seq)
        elif which == "peers":
            self.peers = {p.node: p for p in msg.peers.peers}
            self.peer_version = msg.peers.version
        elif which == "command":
            await self._command(msg.command)

    def _post(self, msg: agent_pb2.AgentMessage) -> None:
        try:
            self._outbox.put_nowait(msg)
        except asyncio.QueueFull:
            log.warning("outbox full; dropping a %s", msg.WhichOneof("body"))

    async def _command(self, cmd: agent_pb2.Command) -> None:
        which = cmd.WhichOneof("body")
        if which == "run_probe":
            try:
                ctx = self.prepare_probe(cmd.run_probe)
            except CniscopeError as exc:
                self._post(agent_pb2.AgentMessage(command_ack=agent_pb2.CommandAck(
                    command_id=cmd.command_id, accepted=False, error=f"{exc.title}: {exc}")))
                self._record_result(cmd.run_probe, None, error=f"{exc.title}: {exc}")
                return
            self._post(agent_pb2.AgentMessage(command_ack=agent_pb2.CommandAck(
                command_id=cmd.command_id, accepted=True)))
            task = asyncio.create_task(self._run_probe(cmd.run_probe, ctx))
            self._probe_tasks.add(task)
            task.add_done_callback(self._probe_tasks.discard)
        elif which == "serve_target":
            await self._serve_target(cmd.command_id, cmd.serve_target)
        elif which == "stop_target":
            stopped = await self.iperf_servers.stop(cmd.stop_target.probe_id)
            self._post(agent_pb2.AgentMessage(command_ack=agent_pb2.CommandAck(
                command_id=cmd.command_id, accepted=stopped,
                error="" if stopped else "no server for that probe (already reaped)")))
        elif which == "refresh_capabilities":
            self._post(agent_pb2.AgentMessage(command_ack=agent_pb2.CommandAck(
                command_id=cmd.command_id, accepted=True)))
            report = await asyncio.to_thread(capabilities.collect, self.paths)
            self.capabilities = report
            self._post(agent_pb2.AgentMessage(capabilities=report))
        else:
            self._post(agent_pb2.AgentMessage(command_ack=agent_pb2.CommandAck(
                command_id=cmd.command_id, accepted=False, error=f"unknown command {which!r}")))

    # ---- targets -----------------------------------------------------------------------------
    def probe_address(self, path: str) -> tuple[str, str]:
        """(address, netns) where this node serves and originates probe traffic for ``path``."""
        if path in ("pod", "service"):
            if not self.cfg.pod_ip or not self.cfg.pod_netns:
                raise CniscopeError(f"node {self.cfg.node} has no probe pod (pod IP / netns not configured)")
            return self.cfg.pod_ip, self.cfg.pod_netns
        if not self.cfg.host_ip:
            raise CniscopeError(f"node {self.cfg.node} has no host IP configured")
        return self.cfg.host_ip, ""

    async def _serve_target(self, command_id: str, req: targets_pb2.ServeTarget) -> None:
        ack = agent_pb2.CommandAck(command_id=command_id, accepted=True)
        try:
            if req.kind not in ("tcp", "udp"):
                raise CniscopeError(f"no one-off server for probe kind {req.kind!r}")
            path = probespec.validate_path(req.path)
            address, netns = self.probe_address(path)
            port = req.port or self.cfg.iperf_port
            expected = min(max(req.expected_seconds, 1.0), 600.0)
            await self.iperf_servers.start(req.probe_id, address, port, netns, expected)
            ack.target.CopyFrom(targets_pb2.TargetReady(probe_id=req.probe_id, address=address, port=port))
        except CniscopeError as exc:
            ack.accepted = False
            ack.error = f"{exc.title}: {exc}"
        self._post(agent_pb2.AgentMessage(command_ack=ack))

    # ---- probes ------------------------------------------------------------------------------
    def prepare_probe(self, req: common_pb2.ProbeRequest) -> ProbeContext:
        """Validate kind, parameters, path and target before any packet leaves."""
        spec = probespec.spec_for(req.kind)
        values = spec.params.validate(dict(req.params))
        path = probespec.validate_path(req.path)
        if req.kind not in PROBES:
            raise CniscopeError(f"probe {req.kind!r} is not implemented by this agent ({VERSION})")
        target = req.target_address
        if not target and req.target_node:
            peer = self.peers.get(req.target_node)
            if peer is None:
                raise CniscopeError(f"unknown target node {req.target_node!r}; "
                                    f"known: {', '.join(sorted(self.peers)) or 'none'}")
            target = peer.pod_ip if path == "pod" else peer.host_ip
            if not target:
                raise CniscopeError(f"node {req.target_node} has no {path} address")
        if not target:
            raise CniscopeError("a probe needs a target node or address")
        peer_addrs = [a for p in self.peers.values() for a in (p.host_ip, p.pod_ip) if a]
        address = netpolicy.check_target(target, peer_addrs, self.cfg.allow_cidrs)
        netns = self.probe_address(path)[1] if path != "host" else ""
        port = req.target_port or 0
        return ProbeContext(
            probe_id=req.probe_id, kind=req.kind, source_node=self.cfg.node,
            target_node=req.target_node, target_address=address, path=path, params=values,
            netns=netns, target_port=port or self.cfg.target_port, iperf_port=port or self.cfg.iperf_port,
        )

    async def _run_probe(self, req: common_pb2.ProbeRequest, ctx: ProbeContext) -> None:
        async def progress(fraction: float, message: str) -> None:
            self._post(agent_pb2.AgentMessage(probe_progress=common_pb2.ProbeProgress(
                probe_id=req.probe_id, fraction=fraction, message=message)))

        ctx.progress = progress
        probe = PROBES.get(req.kind)
        spec = probespec.spec_for(req.kind)
        started = time.time_ns()
        try:
            if probespec.is_bandwidth(req.kind, dict(ctx.params)):
                async with self._bandwidth_lock:
                    outcome = await probe.run(ctx)
            else:
                outcome = await probe.run(ctx)
            self._record_result(req, ctx, started=started, ok=outcome.ok, error=outcome.error,
                                figures=outcome.figures, detail=outcome.detail)
        except asyncio.CancelledError:
            self._record_result(req, ctx, started=started, error="probe cancelled")
            raise
        except Exception as exc:  # a probe's bug is a failed result, never a dead agent
            log.exception("probe %s %s failed", req.kind, req.probe_id)
            self._record_result(req, ctx, started=started, error=f"{type(exc).__name__}: {exc}")
        del spec

    def _record_result(self, req: common_pb2.ProbeRequest, ctx: ProbeContext | None, *,
                       started: int | None = None, ok: bool = False, error: str = "",
                       figures: dict[str, float] | None = None, detail: dict[str, object] | None = None) -> None:
        res = common_pb2.ProbeResult(
            probe_id=req.probe_id, kind=req.kind, source_node=self.cfg.node,
            target_node=req.target_node, target_address=ctx.target_address if ctx else req.target_address,
            path=ctx.path if ctx else req.path, ok=ok, error=error, figures=figures or {},
            detail_json=json.dumps(detail or {}, default=str),
            started_unix_nano=started or time.time_ns(), finished_unix_nano=time.time_ns(),
            params=ParamSet.to_strings(ctx.params) if ctx else dict(req.params),
        )
        self._pending_results.append(res)
        self.seal_batch()

    # ---- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> None:
        self.capabilities = await asyncio.to_thread(capabilities.collect, self.paths)
        tasks = [asyncio.create_task(self.sample_loop(), name="samples"),
                 asyncio.create_task(self.connection_loop(), name="stream")]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in [*tasks, *self._probe_tasks]:
                t.cancel()
            await asyncio.gather(*tasks, *self._probe_tasks, return_exceptions=True)
            await self.iperf_servers.close()


async def run_agent(cfg: AgentConfig) -> None:
    agent = Agent(cfg)
    log.info("cniscope agent %s on node %s (boot %s) → collector %s",
             VERSION, cfg.node, agent.boot_id[:8], cfg.collector)
    await agent.run()
