"""The collector: a grpc.aio server agents stream into and people-facing clients query."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cniscope.api.v1 import agent_pb2, cluster_pb2, runs_pb2, runs_pb2_grpc
from cniscope.collector import retention
from cniscope.collector.agent_hub import AgentHubService, add_agent_hub
from cniscope.collector.auth import AuthInterceptor
from cniscope.collector.boot_keys import BootKeys
from cniscope.collector.cluster_service import ClusterService, add_cluster
from cniscope.collector.collector_metrics import CollectorMetrics, IngestCounters
from cniscope.collector.dispatcher import Dispatcher
from cniscope.collector.health_service import HealthService
from cniscope.collector.heap_limits import limit_heap
from cniscope.collector.identity_config import authenticator, server_options, target_trust
from cniscope.collector.ratelimit import ClientBuckets
from cniscope.collector.runs import run_store
from cniscope.collector.runs.runs_service import RunsService
from cniscope.collector.runs.service_backend import LabBackends
from cniscope.collector.runs.service_fronts import FrontsSource
from cniscope.collector.runs.service_scaler import delete_leftovers
from cniscope.collector.state import ClusterState
from cniscope.collector.storage_upkeep import StorageMetrics, StorageUpkeep
from cniscope.collector.store import Store
from cniscope.core import grpcutil, kubeapi, security
from cniscope.core.config import CollectorConfig
from cniscope.core.errors import ConfigError, StoreError
from cniscope.core.metricshttp import MetricsServer
from cniscope.core.version import VERSION

log = logging.getLogger("cniscope.collector")

SETTLE_CHUNK = 32   # nodes brought up to date per event-loop turn by the sweep


class Collector:
    """The server and its loops. ``lab_backends`` are the service-scaling backends besides
    Kubernetes this collector may use (the lab's rule loaders when it serves a lab);
    ``service_fronts`` the Services fronting the probe pods, for suites' service-path items."""

    def __init__(self, cfg: CollectorConfig, listen: Sequence[str] | None = None,
                 lab_backends: LabBackends | None = None, service_fronts: FrontsSource | None = None) -> None:
        self.cfg = cfg
        self.lab_backends = lab_backends or {}
        self.service_fronts = service_fronts
        self.listen = list(listen or [cfg.listen])
        self.store = Store(cfg.db)
        self.upkeep = StorageUpkeep(self.store, cfg.max_db_bytes)
        self.trust = target_trust(cfg)
        self.state = ClusterState(stale_after=cfg.stale_after, trust=self.trust)
        self.state.series_cap.max_series = cfg.max_node_series
        self.trust.on_change = self.state.schedule_peers
        self.upkeep.on_usage = lambda u: self.state.set_storage(u.disk_bytes, u.max_bytes, u.time_to_full_s)
        self.dispatcher = Dispatcher(self.state, self.store)
        self.server: grpc.aio.Server | None = None
        self.runs: RunsService | None = None
        self.hub: AgentHubService | None = None
        self.ports: list[int] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._pruner: asyncio.Task[None] | None = None
        self._trust_loop: asyncio.Task[None] | None = None
        self._leftovers: asyncio.Task[int] | None = None
        self.counters = IngestCounters()
        self.metrics = CollectorMetrics(self.state, self.counters)
        self.metrics.registry.register(StorageMetrics(lambda: self.upkeep.usage))
        self.metrics_server: MetricsServer | None = None
        self.limiter = ClientBuckets(cfg.probe_rate, cfg.probe_burst)
        self.authenticator = authenticator(cfg)
        self.auth = AuthInterceptor(self.authenticator)  # also bounds every status message, auth or not
        self.credentials = security.server_credentials(cfg.tls_cert, cfg.tls_key, cfg.tls_ca)

    async def start(self) -> None:
        server = grpc.aio.server(options=server_options(self.cfg), interceptors=[self.auth])
        boot_keys = BootKeys(self.store)
        await boot_keys.load()
        self.hub = AgentHubService(self.state, self.store, self.dispatcher, self.counters, boot_keys,
                                   self.cfg.max_capability_bytes, admit=self.auth.admit)
        add_agent_hub(self.hub, server)
        add_cluster(ClusterService(self.state, self.store, self.dispatcher, self.listen[0], self.limiter), server)
        await self.store.call(run_store.mark_interrupted, self.store.conn, time.time_ns())
        self.runs = RunsService(self.state, self.store, self.dispatcher, lab_backends=self.lab_backends,
                                service_fronts=self.service_fronts)
        runs_pb2_grpc.add_RunsServicer_to_server(self.runs, server)
        health_servicer = HealthService()
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
        self.upkeep.start()
        if self.trust.fetch is not None:
            self._trust_loop = asyncio.create_task(self.trust.loop())
        if kubeapi.wanted("auto"):     # in a cluster: Services a killed collector left behind go first
            self._leftovers = asyncio.create_task(asyncio.to_thread(delete_leftovers, self.cfg, log))
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
        for t in (self._sweeper, self._pruner, self._trust_loop, self._leftovers):
            if t is not None:
                t.cancel()
        await self.metrics.stop()
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        if self.server is not None:
            await self.server.stop(grace)
        if self.hub is not None:
            await self.hub.committer.stop()
        await self.upkeep.stop()
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


async def run_collector(cfg: CollectorConfig, listen: Sequence[str] | None = None,
                        lab_backends: LabBackends | None = None, service_fronts: FrontsSource | None = None) -> None:
    check_db_path(cfg.db)
    limit_heap()  # the collector process's own allocator, before the server starts its threads
    c = Collector(cfg, listen, lab_backends, service_fronts)
    await c.start()
    try:
        await c.wait()
    finally:
        await c.stop()
