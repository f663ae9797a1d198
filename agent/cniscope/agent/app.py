"""The per-node agent: samples, runs probes on command, and streams everything to the collector.

One long-lived bidirectional stream (``AgentHub.Connect``). Every durable thing travels in a
``Batch`` with ``(boot_id, seq)``; batches stay in the spool until the collector acknowledges them,
and are resent after a reconnect. Nothing here depends on the collector being up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc

from cniscope.agent import capabilities, mesh_peers
from cniscope.agent.agent_metrics import AgentMetrics
from cniscope.agent.backoff import Backoff
from cniscope.agent.health import HealthServer
from cniscope.agent.probes import PROBES, probe_request
from cniscope.agent.probes.probe import ProbeContext
from cniscope.agent.samplers import SAMPLERS
from cniscope.agent.samplers.sampler import Sampler
from cniscope.agent.spool import Spool
from cniscope.agent.targets import listeners
from cniscope.agent.targets.iperf import IperfServers
from cniscope.api.v1 import agent_pb2, agent_pb2_grpc, common_pb2, targets_pb2
from cniscope.core import grpcutil, security
from cniscope.core.config import AgentConfig, read_token
from cniscope.core.errors import CniscopeError
from cniscope.core.hostpaths import HostPaths
from cniscope.core.metricshttp import MetricsServer
from cniscope.core.probekinds import spec_for
from cniscope.core.probespec import validate_path
from cniscope.core.version import VERSION

if TYPE_CHECKING:
    from cniscope.agent.cluster_api import ClusterView

log = logging.getLogger("cniscope.agent")

CLOCK_OFFSET_SAMPLE = "agent_clock_offset_ms"  # agent minus collector, measured over the Welcome round trip
CERT_POLL_SECONDS = 2.0   # how often the agent looks for a rotated TLS certificate


class CertificateRotated(Exception):
    """A TLS file changed on disk: the channel is rebuilt with the new credentials."""


class AddressesChanged(Exception):
    """This node's probe pod was replaced: reconnect, so the Hello carries the new pod address."""


def check_protobuf_backend() -> None:
    """Refuse the pure-Python protobuf backend: it costs ~10x the CPU the agent is allowed."""
    from google.protobuf.internal import api_implementation

    if api_implementation.Type() == "python":
        raise CniscopeError("the pure-Python protobuf backend is active (PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"
                            "=python or no upb wheel); install the protobuf wheel for this platform",
                            title="refusing to start")


class Agent:
    def __init__(self, cfg: AgentConfig, paths: HostPaths | None = None) -> None:
        self.cfg = cfg
        self.paths = paths or HostPaths.from_env()
        self.boot_id = uuid.uuid4().hex
        self.seq = 0
        self.spool = Spool(cfg.spool_max_batches, cfg.spool_max_bytes, path=cfg.spool_path or None,
                           boot_id=self.boot_id)
        if self.spool.recovered:
            log.info("spool %s: %d undelivered batches of earlier boots recovered", cfg.spool_path,
                     self.spool.recovered)
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
        self._probe_by_id: dict[str, asyncio.Task[None]] = {}
        self._token = read_token(cfg.token_file)
        self.metrics = AgentMetrics(self)
        self.last_samples: list[common_pb2.Sample] = []
        self.clock_offset_ms = 0.0
        self.clock_rtt_ms: float | None = None
        self.last_results: dict[tuple[str, str, str], common_pb2.ProbeResult] = {}
        self.iperf_servers = IperfServers()
        self.listeners: listeners.Listeners | None = None
        self._readdress = asyncio.Event()
        self._probe_pod_uid = ""
        self._refresh_task: asyncio.Task[None] | None = None
        self._refresh_again = False
        self._refresh_watchdogs: set[asyncio.Task[None]] = set()
        self._collecting: capabilities.Progress | None = None
        self._last_progress: capabilities.Progress | None = None
        self._answered_at = 0.0

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
        ] + ([] if self.clock_rtt_ms is None else [
            common_pb2.Sample(name=CLOCK_OFFSET_SAMPLE, value=self.clock_offset_ms, time_unix_nano=now_ns),
            common_pb2.Sample(name="agent_clock_rtt_ms", value=self.clock_rtt_ms, time_unix_nano=now_ns),
        ])

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
            self.last_samples = samples
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
            spool_dropped=self.spool.dropped, replay_boot_ids=self.spool.other_boots(),
        )
        if self.capabilities is not None:
            h.capabilities.CopyFrom(self.capabilities)
        return agent_pb2.AgentMessage(hello=h)

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return (("x-cniscope-node", self.cfg.node), *security.bearer_metadata(self._token))

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

    def _tls_files(self) -> tuple[str, ...]:
        return tuple(p for p in (self.cfg.tls_ca, self.cfg.tls_cert, self.cfg.tls_key) if p)

    async def _watch_certificates(self, sig: tuple[tuple[str, int, int], ...]) -> None:
        """``sig`` is the files' signature taken before the channel's credentials were read: a
        rotation while the channel was being set up is noticed too."""
        files = self._tls_files()
        while True:
            await asyncio.sleep(CERT_POLL_SECONDS)
            now = security.files_signature(*files)
            if now != sig:
                raise CertificateRotated(f"TLS files changed ({', '.join(files)})")

    async def _session(self) -> None:
        opts = grpcutil.client_options(keepalive_time=self.cfg.keepalive_time,
                                       keepalive_timeout=self.cfg.keepalive_timeout)
        tls_sig = security.files_signature(*self._tls_files())
        creds = security.client_credentials(self.cfg.tls_ca, self.cfg.tls_cert, self.cfg.tls_key)
        async with grpcutil.insecure_channel(self.cfg.collector, opts, creds) as channel:
            stub = agent_pb2_grpc.AgentHubStub(channel)
            call = stub.Connect(metadata=self._metadata())
            t_send = time.time_ns()
            await call.write(self.hello())
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
            tasks = {asyncio.create_task(self._send_loop(call)), asyncio.create_task(self._consume(call))}
            if self._tls_files():
                tasks.add(asyncio.create_task(self._watch_certificates(tls_sig)))
            tasks.add(asyncio.create_task(self._await_readdress()))
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

    async def _consume(self, call: grpc.aio.StreamStreamCall) -> None:  # type: ignore[type-arg]
        async for msg in self._read(call):
            await self._handle(msg)

    @staticmethod
    async def _read(call: grpc.aio.StreamStreamCall) -> AsyncIterator[agent_pb2.CollectorMessage]:  # type: ignore[type-arg]
        while True:
            msg = await call.read()
            if not isinstance(msg, agent_pb2.CollectorMessage):
                return
            yield msg

    async def _send_loop(self, call: grpc.aio.StreamStreamCall) -> None:  # type: ignore[type-arg]
        cursor = 0  # everything still spooled goes out first (earlier boots, then this one), in order
        while True:
            self._wake.clear()
            batches, cursor = self.spool.after(cursor)
            for b in batches:
                await call.write(agent_pb2.AgentMessage(batch=b))
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
            self.spool.ack(msg.ack.seq, msg.ack.boot_id)
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
            pid = cmd.run_probe.probe_id
            self._probe_by_id[pid] = task
            task.add_done_callback(lambda _t, pid=pid: self._probe_by_id.pop(pid, None))  # type: ignore[misc]
        elif which == "cancel_probe":
            running = self._probe_by_id.get(cmd.cancel_probe.probe_id)
            if running is not None:
                running.cancel()  # the probe's tool is killed; its result says "probe cancelled"
            self._post(agent_pb2.AgentMessage(command_ack=agent_pb2.CommandAck(
                command_id=cmd.command_id, accepted=running is not None,
                error="" if running is not None else "no such probe running (already finished)")))
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
            self.request_refresh()
        else:
            self._post(agent_pb2.AgentMessage(command_ack=agent_pb2.CommandAck(
                command_id=cmd.command_id, accepted=False, error=f"unknown command {which!r}")))

    # ---- capability refresh ------------------------------------------------------------------
    def request_refresh(self) -> None:
        """Collect a fresh capability report in the background (the stream keeps being read). Requests
        while one runs are answered by one more collection after it, never two at once; and each
        request still unanswered after ``capabilities_budget`` seconds gets what has finished so far
        (an unfinished report naming the unit still running)."""
        watchdog = asyncio.create_task(self._answer_within_budget(time.monotonic()))
        self._refresh_watchdogs.add(watchdog)
        watchdog.add_done_callback(self._refresh_watchdogs.discard)
        if self._refresh_task is not None and not self._refresh_task.done():
            self._refresh_again = True
            return
        self._refresh_task = asyncio.create_task(self._refresh_loop(), name="capabilities")

    async def _refresh_loop(self) -> None:
        while True:
            self._refresh_again = False
            progress = self._collecting = capabilities.Progress()
            try:
                report = await asyncio.to_thread(capabilities.collect, self.paths, progress=progress)
            except Exception as exc:  # a refresh that fails leaves the last report standing
                log.warning("capability refresh failed: %s", exc)
            else:
                self.capabilities, self._last_progress = report, progress
                self._post_report(report)
            finally:
                self._collecting = None
            if not self._refresh_again:
                return

    async def _answer_within_budget(self, asked: float) -> None:
        await asyncio.sleep(max(0.0, self.cfg.capabilities_budget))
        progress = self._collecting
        if self._answered_at >= asked or progress is None:
            return
        part = capabilities.unfinished(progress, self._last_progress)
        log.warning("capability refresh: unit %s still running after %.1fs; sending the units that finished",
                    part.unfinished.running or "?", part.unfinished.running_seconds)
        self._post_report(part)

    def _post_report(self, report: common_pb2.CapabilityReport) -> None:
        self._answered_at = time.monotonic()
        self._post(agent_pb2.AgentMessage(capabilities=report))

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
            if not spec_for(req.kind).served:
                raise CniscopeError(f"no one-off server for probe kind {req.kind!r}")
            path = validate_path(req.path)
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
        return probe_request.prepare(req, probe_request.Origin(
            self.cfg.node, self.peers, self.cfg.allow_cidrs, self.cfg.target_port, self.cfg.iperf_port,
            self.probe_address))

    async def _start_listeners(self) -> None:
        """The accept-and-close port and the HTTP echo endpoint on every probe address."""
        endpoints = []
        if self.cfg.host_ip:
            endpoints.append((self.cfg.host_ip, ""))
        if self.cfg.pod_ip and self.cfg.pod_netns:
            endpoints.append((self.cfg.pod_ip, self.cfg.pod_netns))
        self.listeners = await listeners.start(endpoints, self.cfg.target_port)

    # ---- the light mesh ----------------------------------------------------------------------
    async def mesh_loop(self) -> None:
        """rtt to a hash-chosen, bounded subset of peers every ``mesh_interval`` (see ``mesh``)."""
        interval = self.cfg.mesh_interval
        if interval <= 0:
            return
        rng = random.Random(self.boot_id)
        await asyncio.sleep(rng.uniform(0, interval))  # agents started together do not ping in step
        while True:
            t0 = time.monotonic()
            peers = mesh_peers.choose_peers(self.cfg.node, self.peers, self.cfg.mesh_fanout)
            for peer, off in zip(peers, mesh_peers.offsets(len(peers), interval, 0.2, rng), strict=True):
                delay = t0 + off - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if peer in self.peers and not self._bandwidth_busy():
                    await self.mesh_probe(peer)
            await asyncio.sleep(max(0.0, t0 + interval * rng.uniform(0.9, 1.1) - time.monotonic()))

    def _bandwidth_busy(self) -> bool:
        return self._bandwidth_lock.locked() or bool(self.iperf_servers.servers)

    async def mesh_probe(self, peer: str) -> None:
        p = self.peers[peer]
        path = "pod" if (self.cfg.pod_ip and self.cfg.pod_netns and p.pod_ip) else "host"
        req = common_pb2.ProbeRequest(probe_id=f"mesh-{uuid.uuid4().hex[:12]}", kind="rtt",
                                      source_node=self.cfg.node, target_node=peer, path=path,
                                      params=mesh_peers.MESH_PARAMS)
        try:
            ctx = self.prepare_probe(req)
        except CniscopeError as exc:
            log.debug("mesh rtt to %s skipped: %s", peer, exc)
            return
        ctx.mesh = True  # marks the stored result (params) as a mesh measurement
        started = time.time_ns()
        try:
            out = await PROBES.get("rtt").run(ctx)
        except Exception as exc:  # a failed mesh probe is a result, never a dead loop
            self._record_result(req, ctx, started=started, error=f"{type(exc).__name__}: {exc}")
            return
        self._record_result(req, ctx, started=started, ok=out.ok, error=out.error, figures=out.figures,
                            detail={**out.detail, "mesh": True})

    async def _run_probe(self, req: common_pb2.ProbeRequest, ctx: ProbeContext) -> None:
        async def progress(fraction: float, message: str) -> None:
            self._post(agent_pb2.AgentMessage(probe_progress=common_pb2.ProbeProgress(
                probe_id=req.probe_id, fraction=fraction, message=message)))

        ctx.progress = progress
        probe = PROBES.get(req.kind)
        started = time.time_ns()
        try:
            if spec_for(req.kind).is_bandwidth(ctx.params):
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

    def _record_result(self, req: common_pb2.ProbeRequest, ctx: ProbeContext | None, *,
                       started: int | None = None, ok: bool = False, error: str = "",
                       figures: dict[str, float] | None = None, detail: dict[str, object] | None = None) -> None:
        res = common_pb2.ProbeResult(
            probe_id=req.probe_id, kind=req.kind, source_node=self.cfg.node,
            target_node=req.target_node, target_address=ctx.target_address if ctx else req.target_address,
            path=ctx.path if ctx else req.path, ok=ok, error=error, figures=figures or {},
            detail_json=json.dumps(detail or {}, default=str),
            started_unix_nano=started or time.time_ns(), finished_unix_nano=time.time_ns(),
            params=ctx.result_params() if ctx else dict(req.params),
        )
        self._pending_results.append(res)
        self.last_results[(res.kind, res.target_node or res.target_address, res.path)] = res
        self.seal_batch()

    # ---- lifecycle ---------------------------------------------------------------------------
    async def _await_readdress(self) -> None:
        await self._readdress.wait()
        self._readdress.clear()
        raise AddressesChanged(f"probe pod address now {self.cfg.pod_ip}")

    async def _discover_probe_pod(self) -> ClusterView | None:
        """In Kubernetes: this node's probe pod's IP and network namespace, for the pod paths.
        Returns the API view to keep reconciling with (None in the lab or with --pod-netns)."""
        from cniscope.core import kubeapi

        if self.cfg.pod_netns or not kubeapi.wanted(self.cfg.kubernetes):
            return None
        from cniscope.agent import cluster_api

        try:
            view = await asyncio.to_thread(cluster_api.ClusterView.connect, self.cfg.kubernetes)
        except CniscopeError as exc:
            log.warning("no Kubernetes API for the probe pod: %s", exc)
            return None
        if view is not None:
            await asyncio.to_thread(cluster_api.resolve_allow_list, self.cfg, view)
            try:
                pod = await asyncio.to_thread(cluster_api.discover_probe_pod, self.cfg, self.paths, view, 30.0)
                self._probe_pod_uid = pod.uid if pod is not None else ""
            except CniscopeError as exc:  # keep the view: the reconcile loop tries again
                log.warning("no probe pod for the pod paths yet: %s", exc)
        return view

    async def _probe_pod_loop(self, view: ClusterView) -> None:
        """Follow the probe pod through restarts and rollouts: re-point the pod paths, re-serve the
        pod-side targets, reconnect so the collector learns the new address. Never ends the agent."""
        from cniscope.agent import cluster_api

        while True:
            await asyncio.sleep(max(1.0, self.cfg.probe_pod_recheck))
            try:
                pod = await asyncio.to_thread(cluster_api.reconcile_probe_pod, self.cfg, self.paths, view,
                                              self._probe_pod_uid)
                if pod is None:
                    continue
                self._probe_pod_uid = pod.uid
                if self.listeners is not None:
                    await self.listeners.close()
                await self._start_listeners()
                self._readdress.set()
            except Exception as exc:  # an API hiccup is logged and retried next round
                log.warning("probe pod check failed: %s", exc)

    async def run(self) -> None:
        health_server = HealthServer(self.cfg.health_listen) if self.cfg.health_listen else None
        if health_server is not None:
            await health_server.start()
        probe_pod_view = await self._discover_probe_pod()
        first = capabilities.Progress()
        self.capabilities = await asyncio.to_thread(capabilities.collect, self.paths, progress=first)
        self._last_progress = first
        if health_server is not None:
            await health_server.ready()
        metrics_server = None
        if self.cfg.metrics_listen:
            metrics_server = MetricsServer(self.metrics.registry, self.cfg.metrics_listen)
            await metrics_server.start()
        await self._start_listeners()
        tasks = [asyncio.create_task(self.sample_loop(), name="samples"),
                 asyncio.create_task(self.connection_loop(), name="stream"),
                 asyncio.create_task(self.mesh_loop(), name="mesh")]
        if probe_pod_view is not None:
            tasks.append(asyncio.create_task(self._probe_pod_loop(probe_pod_view), name="probe-pod"))
        try:
            await asyncio.gather(*tasks)
        finally:
            refresh = [*([self._refresh_task] if self._refresh_task is not None else []), *self._refresh_watchdogs]
            for t in [*tasks, *self._probe_tasks, *refresh]:
                t.cancel()
            await asyncio.gather(*tasks, *self._probe_tasks, *refresh, return_exceptions=True)
            if self.listeners is not None:
                await self.listeners.close()
            if metrics_server is not None:
                await metrics_server.stop()
            if health_server is not None:
                await health_server.stop()
            self.spool.close()
            await self.iperf_servers.close()


async def run_agent(cfg: AgentConfig) -> None:
    check_protobuf_backend()
    agent = Agent(cfg)
    log.info("cniscope agent %s on node %s (boot %s) → collector %s",
             VERSION, cfg.node, agent.boot_id[:8], cfg.collector)
    await agent.run()
