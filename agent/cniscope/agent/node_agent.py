"""The per-node agent: samples, runs probes on command, and streams everything to the collector.

:class:`NodeAgent` only wires its collaborators, each in a module of its own:

- :mod:`~cniscope.agent.collector_session` — the one long-lived stream, reconnects, TLS rotation;
- :mod:`~cniscope.agent.batch_sealer` and :mod:`~cniscope.agent.spool` — every durable thing travels
  in a ``Batch`` with ``(boot_id, seq)`` and stays spooled until the collector acknowledges it;
- :mod:`~cniscope.agent.sample_loop` — the samplers, every ``sample_interval``;
- :mod:`~cniscope.agent.command_handler` — the collector's commands;
- :mod:`~cniscope.agent.probe_runner` and :mod:`~cniscope.agent.target_server` — probes from and to
  this node; :mod:`~cniscope.agent.mesh_loop` — the background light mesh;
- :mod:`~cniscope.agent.capability_refresh` — the capability report;
- :mod:`~cniscope.agent.probe_pod_loop` — the probe pod, in Kubernetes only.

Nothing here depends on the collector being up. Modules only some agents use (the Kubernetes API,
the health and metrics endpoints, bcc) are loaded only by those agents.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping, Sequence

from cniscope.agent.batch_sealer import BatchSealer
from cniscope.agent.capability_refresh import CapabilityRefresh
from cniscope.agent.collector_session import CollectorSession
from cniscope.agent.command_handler import CommandHandler
from cniscope.agent.mesh_loop import MeshLoop
from cniscope.agent.probe_pod_loop import ProbePodLoop
from cniscope.agent.probe_runner import ProbeRunner, ResultKey
from cniscope.agent.probes.probe_request import Origin
from cniscope.agent.sample_loop import SampleLoop
from cniscope.agent.samplers import SAMPLERS
from cniscope.agent.spool import Spool
from cniscope.agent.target_server import TargetServer
from cniscope.api.v1 import agent_pb2, common_pb2
from cniscope.core.config import AgentConfig
from cniscope.core.errors import CniscopeError
from cniscope.core.hostpaths import HostPaths
from cniscope.core.version import VERSION

log = logging.getLogger("cniscope.agent")


def check_protobuf_backend() -> None:
    """Refuse the pure-Python protobuf backend: it costs ~10x the CPU the agent is allowed."""
    from google.protobuf.internal import api_implementation

    if api_implementation.Type() == "python":
        raise CniscopeError("the pure-Python protobuf backend is active (PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"
                            "=python or no upb wheel); install the protobuf wheel for this platform",
                            title="refusing to start")


class NodeAgent:
    def __init__(self, cfg: AgentConfig, paths: HostPaths | None = None) -> None:
        self.cfg = cfg
        self.paths = paths or HostPaths.from_env()
        self.boot_id = uuid.uuid4().hex
        self.spool = Spool(cfg.spool_max_batches, cfg.spool_max_bytes, path=cfg.spool_path or None,
                           boot_id=self.boot_id)
        if self.spool.recovered:
            log.info("spool %s: %d undelivered batches of earlier boots recovered", cfg.spool_path,
                     self.spool.recovered)
        self.peers: dict[str, common_pb2.Peer] = {}   # the collector's peer table, updated in place
        self.sealer = BatchSealer(self.boot_id, self.spool)
        self.session = CollectorSession(cfg, self.boot_id, self.spool, self.sealer.wake, self.peers,
                                        capabilities=lambda: self.refresh.report, on_command=self._command)
        post = self.session.post
        self.refresh = CapabilityRefresh(self.paths, cfg.capabilities_budget, post)
        self.targets = TargetServer(cfg)
        self.probes = ProbeRunner(cfg.node, self._origin, post, self.sealer.add_result)
        self.commands = CommandHandler(self.probes, self.targets, self.refresh, post)
        self.samples = SampleLoop([factory() for _, factory in SAMPLERS.items()], self.sealer,
                                  cfg.sample_interval, self.session.own_samples)
        self.mesh = MeshLoop(cfg, self.boot_id, self.peers, self.probes,
                             busy=lambda: self.probes.bandwidth_running or self.targets.serving_bandwidth)

    def _origin(self) -> Origin:
        return Origin(self.cfg.node, self.peers, self.cfg.allow_cidrs, self.cfg.target_port, self.cfg.iperf_port,
                      self.targets.probe_address)

    async def _command(self, cmd: agent_pb2.Command) -> None:
        await self.commands.handle(cmd)

    # ---- what /metrics reads (agent_metrics.AgentStatus) --------------------------------------
    @property
    def node(self) -> str:
        return self.cfg.node

    @property
    def reconnects(self) -> int:
        return self.session.reconnects

    @property
    def connected(self) -> bool:
        return self.session.connected.is_set()

    @property
    def last_seq(self) -> int:
        return self.sealer.seq

    @property
    def last_samples(self) -> Sequence[common_pb2.Sample]:
        return self.samples.last

    @property
    def last_results(self) -> Mapping[ResultKey, common_pb2.ProbeResult]:
        return self.probes.last_results

    @property
    def capabilities(self) -> common_pb2.CapabilityReport | None:
        return self.refresh.report

    # ---- lifecycle ---------------------------------------------------------------------------
    async def _probe_pod_moved(self) -> None:
        await self.targets.start_listeners()
        self.session.readdress()

    async def run(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            health = None
            if self.cfg.health_listen:
                from cniscope.agent.health import HealthServer  # grpc.health only where it is served

                health = HealthServer(self.cfg.health_listen)
                await health.start()
                stack.push_async_callback(health.stop)
            stack.callback(self.spool.close)
            stack.push_async_callback(self.targets.close)
            probe_pod = await ProbePodLoop.discover(self.cfg, self.paths, self._probe_pod_moved)
            await self.refresh.collect_first()
            if health is not None:
                await health.ready()
            if self.cfg.metrics_listen:
                from cniscope.agent.agent_metrics import AgentMetrics  # prometheus_client only where scraped
                from cniscope.core.metricshttp import MetricsServer

                metrics = MetricsServer(AgentMetrics(self).registry, self.cfg.metrics_listen)
                await metrics.start()
                stack.push_async_callback(metrics.stop)
            await self.targets.start_listeners()
            tasks = [asyncio.create_task(self.samples.run(), name="samples"),
                     asyncio.create_task(self.session.connection_loop(), name="stream"),
                     asyncio.create_task(self.mesh.run(), name="mesh")]
            if probe_pod is not None:
                tasks.append(asyncio.create_task(probe_pod.run(), name="probe-pod"))
            try:
                await asyncio.gather(*tasks)
            finally:
                rest = [*tasks, *self.probes.tasks, *self.refresh.tasks()]
                for t in rest:
                    t.cancel()
                await asyncio.gather(*rest, return_exceptions=True)


async def run_agent(cfg: AgentConfig) -> None:
    check_protobuf_backend()
    agent = NodeAgent(cfg)
    log.info("cniscope agent %s on node %s (boot %s) → collector %s",
             VERSION, cfg.node, agent.boot_id[:8], cfg.collector)
    await agent.run()
