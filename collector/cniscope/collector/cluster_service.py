"""The Cluster service people-facing clients (CLI, TUI) call: watch the cluster, list and get nodes,
run probes (rate limited; explicit targets checked against the agents and the allow-list before
anything reaches an agent) and read stored probe results."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from cniscope.api.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2
from cniscope.collector.dispatcher import Dispatcher
from cniscope.collector.ratelimit import TokenBucket
from cniscope.collector.state import ClusterState
from cniscope.collector.store import Store
from cniscope.core import cluster_cidrs, grpcutil, netpolicy
from cniscope.core.errors import CniscopeError, ValidationError
from cniscope.core.version import VERSION


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
                allow = cluster_cidrs.with_reported(self.allow_cidrs, (st.capabilities for st in self.state.nodes.values()))
                await asyncio.to_thread(netpolicy.check_target, request.target_address, peers, allow)
            except ValidationError as exc:
                self.state.log_event("warning", f"refused probe target from {context.peer()}: {exc}")
                await context.abort(grpcutil.status_code(exc.grpc_status), f"{exc.title}: {exc}")

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
            await context.abort(grpcutil.status_code(exc.grpc_status), f"{exc.title}: {exc}")

    async def ListProbeResults(self, request: cluster_pb2.ListProbeResultsRequest,  # noqa: N802
                               context: grpc.aio.ServicerContext) -> cluster_pb2.ListProbeResultsResponse:  # type: ignore[type-arg]
        rows = await self.store.call(self.store.probe_results, request.kind, request.source_node,
                                     request.target_node, request.limit or 100)
        return cluster_pb2.ListProbeResultsResponse(results=rows)
