"""The Cluster service people-facing clients (CLI, TUI) call: watch the cluster, list and get nodes,
run probes and read stored probe results.

RunProbe is rate limited per client (identity and address); its probe id is the collector's; an
explicit target — the target address, or a kind's target parameter such as dns's resolver — is
checked against what the collector itself knows (:mod:`.target_trust`) before anything reaches an
agent. ListNodes answers in pages bounded by count and bytes; Watch sends its snapshot one node per
event and ends a watcher that falls too far behind. Inputs quoted in errors are shortened.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import AsyncIterator
from typing import Any

import grpc

from cniscope.api.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2
from cniscope.collector import auth
from cniscope.collector.dispatcher import Dispatcher
from cniscope.collector.principals import shorten
from cniscope.collector.ratelimit import ClientBuckets, client_key
from cniscope.collector.state import ClusterState
from cniscope.collector.store import Store
from cniscope.collector.watchers import encode_event
from cniscope.core import grpcutil, netpolicy
from cniscope.core.errors import CniscopeError, ValidationError
from cniscope.core.probekinds import spec_for
from cniscope.core.version import VERSION

PAGE_NODES = 1000                 # nodes in one ListNodes page at most
PAGE_BYTES = 2 * 1024 * 1024      # encoded nodes in one ListNodes page at most (one node always fits)
TOKEN_PREFIX = "after:"
SERVICE = cluster_pb2.DESCRIPTOR.services_by_name["Cluster"].full_name


def _serialize_event(ev: cluster_pb2.ClusterEvent | bytes) -> bytes:
    return ev if isinstance(ev, bytes) else ev.SerializeToString()


class _Handlers:
    """Stands in for a server to catch the generated handlers (every method of the service)."""

    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]

    def add_generic_rpc_handlers(self, _handlers: object) -> None:
        pass

    def add_registered_method_handlers(self, _service: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]) -> None:
        self.handlers = dict(handlers)


def add_cluster(servicer: ClusterService, server: grpc.aio.Server) -> None:
    """Cluster as generated, except that Watch may also yield events already encoded: a watcher's
    backlog holds encoded events, shared by every watcher and handed to gRPC as they are."""
    caught = _Handlers()
    cluster_pb2_grpc.add_ClusterServicer_to_server(servicer, caught)  # type: ignore[arg-type]  # only these two calls
    handlers = {**caught.handlers, "Watch": grpc.unary_stream_rpc_method_handler(
        servicer.Watch, request_deserializer=cluster_pb2.WatchRequest.FromString,
        response_serializer=_serialize_event)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)


class ClusterService(cluster_pb2_grpc.ClusterServicer):
    def __init__(self, state: ClusterState, store: Store, dispatcher: Dispatcher, address: str,
                 limiter: ClientBuckets | None = None) -> None:
        self.state = state
        self.store = store
        self.dispatcher = dispatcher
        self.address = address
        self.limiter = limiter

    async def admit(self, request: common_pb2.ProbeRequest, context: grpc.aio.ServicerContext) -> None:  # type: ignore[type-arg]
        """Rate limit, then refuse a forbidden explicit target before anything reaches an agent."""
        if self.limiter is not None:
            wait = self.limiter.take(client_key(auth.current().name, context.peer()))
            if wait > 0:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    f"probe rate limit: at most {self.limiter.rate:g}/s with bursts of "
                                    f"{self.limiter.burst} per client; retry in {wait:.2f}s")
        targets = [request.target_address] if request.target_address else []
        try:
            param = spec_for(request.kind).target_param if request.kind else ""
        except CniscopeError:
            param = ""  # an unknown kind is refused by the dispatcher, with the list of kinds
        if param and request.params.get(param):
            targets.append(request.params[param])
        trust = self.state.trust
        for target in targets:
            try:
                await asyncio.to_thread(netpolicy.check_target, target, trust.addresses(), trust.allow_spec())
            except ValidationError as exc:
                self.state.log_event("warning", f"refused probe target from {context.peer()}: {exc}")
                await context.abort(grpcutil.status_code(exc.grpc_status), f"{exc.title}: {exc}")

    async def Watch(self, request: cluster_pb2.WatchRequest,  # type: ignore[override]  # noqa: N802
                    context: grpc.aio.ServicerContext) -> AsyncIterator[cluster_pb2.ClusterEvent | bytes]:  # type: ignore[type-arg]
        w = self.state.subscribe(request.include_samples)
        try:
            for name in sorted(self.state.nodes):
                st = self.state.nodes.get(name)
                if st is not None:
                    yield encode_event("node", st)
            for ev in self.state.recent_logs[-50:]:
                yield cluster_pb2.ClusterEvent(log=ev)
            if self.state.storage is not None:
                yield cluster_pb2.ClusterEvent(storage=self.state.storage)
            yield cluster_pb2.ClusterEvent(snapshot_done=cluster_pb2.SnapshotDone(
                collector_version=VERSION, collector_address=self.address))
            while (event := await w.next()) is not None:
                yield event
        finally:
            self.state.unsubscribe(w)
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, w.cut)

    async def ListNodes(self, request: cluster_pb2.ListNodesRequest,  # noqa: N802
                        context: grpc.aio.ServicerContext) -> cluster_pb2.ListNodesResponse:  # type: ignore[type-arg]
        token = request.page_token
        if token and not token.startswith(TOKEN_PREFIX):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"page token {shorten(token)} is not one ListNodes gave")
        self.state.settle()
        names = sorted(self.state.nodes)
        start = bisect.bisect_right(names, token[len(TOKEN_PREFIX):]) if token else 0
        limit = min(request.page_size or PAGE_NODES, PAGE_NODES)
        resp = cluster_pb2.ListNodesResponse()
        used = 0
        for name in names[start:start + limit]:
            st = self.state.nodes[name]
            size = st.ByteSize() + 8
            if resp.nodes and used + size > PAGE_BYTES:
                break
            resp.nodes.append(st)
            used += size
        if resp.nodes and start + len(resp.nodes) < len(names):
            resp.next_page_token = TOKEN_PREFIX + resp.nodes[-1].node
        return resp

    async def GetNode(self, request: cluster_pb2.GetNodeRequest,  # noqa: N802
                      context: grpc.aio.ServicerContext) -> cluster_pb2.NodeState:  # type: ignore[type-arg]
        self.state.settle(request.node)
        st = self.state.nodes.get(request.node)
        if st is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"node {shorten(request.node)} is unknown")
        assert st is not None
        return st

    async def RunProbe(self, request: common_pb2.ProbeRequest,  # noqa: N802
                       context: grpc.aio.ServicerContext) -> AsyncIterator[cluster_pb2.ProbeUpdate]:  # type: ignore[type-arg]
        await self.admit(request, context)
        request.probe_id = ""  # the collector's own: the first update says which
        try:
            async for upd in self.dispatcher.run(request):
                yield upd
        except CniscopeError as exc:
            await context.abort(grpcutil.status_code(exc.grpc_status), f"{exc.title}: {exc}")

    async def ListProbeResults(self, request: cluster_pb2.ListProbeResultsRequest,  # noqa: N802
                               context: grpc.aio.ServicerContext) -> cluster_pb2.ListProbeResultsResponse:  # type: ignore[type-arg]
        rows = await self.store.call(self.store.probe_results, request.kind, request.source_node,
                                     request.target_node, min(request.limit or 100, PAGE_NODES))
        resp = cluster_pb2.ListProbeResultsResponse()
        used = 0
        for r in rows:  # newest first: as many as fit in one answer
            used += r.ByteSize() + 8
            if resp.results and used > PAGE_BYTES:
                break
            resp.results.append(r)
        return resp
