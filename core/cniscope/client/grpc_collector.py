"""The collector's gRPC API as one client: the Cluster service (watch, nodes, probes, stored results)
and the Runs service (start, follow, cancel, list, compare).

Every call carries the same credentials, built here only: TLS from ``CNISCOPE_TLS_CA`` / ``_CERT`` /
``_KEY`` (plaintext when unset) and the bearer token from ``CNISCOPE_TOKEN_FILE`` or
``CNISCOPE_TOKEN``. A failed call raises a :class:`CniscopeError` whose title names the gRPC status;
an unreachable collector is :class:`ConnectionFailed` naming the address. The channel is made on
first use, on the running event loop (grpc.aio binds a channel to its loop).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Mapping
from types import TracebackType
from typing import TypeVar

import grpc

from cniscope.api.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2, runs_pb2, runs_pb2_grpc
from cniscope.client.client_protocol import ConnectionState
from cniscope.client.event_recording import Recorder
from cniscope.client.run_summary import RunSummary, RunsUnavailable, run_from_proto
from cniscope.core import grpcutil, security
from cniscope.core.config import read_token
from cniscope.core.errors import CniscopeError, ConnectionFailed

T = TypeVar("T")
Metadata = tuple[tuple[str, str], ...]
LIST_RUNS = 500  # newest first


def call_metadata(env: Mapping[str, str] | None = None) -> Metadata:
    """The bearer token of this environment as call metadata (none when no token is configured)."""
    e = os.environ if env is None else env
    return security.bearer_metadata(read_token(e.get("CNISCOPE_TOKEN_FILE", ""), e))


def rpc_error(exc: grpc.aio.AioRpcError, address: str) -> CniscopeError:
    """A failed call as the error a person reads."""
    code = exc.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        return ConnectionFailed(f"cannot reach the collector at {address}: {exc.details()}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ConnectionFailed(f"the collector at {address} did not answer in time: {exc.details()}")
    return CniscopeError(exc.details() or code.name, title=code.name.lower().replace("_", " "))


class CollectorClient:
    """One collector at ``address``; ``record`` also writes what the live view receives to a file
    that :class:`~cniscope.client.replay_collector.ReplayClient` replays."""

    def __init__(self, address: str, record: str | None = None, env: Mapping[str, str] | None = None) -> None:
        self.address = address
        self._env = env
        self._md = call_metadata(env)
        self._channel: grpc.aio.Channel | None = None
        self._cluster: cluster_pb2_grpc.ClusterAsyncStub | None = None
        self._runs: runs_pb2_grpc.RunsAsyncStub | None = None
        self._record = Recorder(record) if record else None

    async def __aenter__(self) -> CollectorClient:
        return self

    async def __aexit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.close()

    def _chan(self) -> grpc.aio.Channel:
        if self._channel is None:
            creds = security.client_credentials_from_env(None if self._env is None else dict(self._env))
            self._channel = grpcutil.insecure_channel(self.address, credentials=creds)
        return self._channel

    @property
    def cluster(self) -> cluster_pb2_grpc.ClusterAsyncStub:
        if self._cluster is None:
            self._cluster = cluster_pb2_grpc.ClusterStub(self._chan())
        return self._cluster

    @property
    def runs(self) -> runs_pb2_grpc.RunsAsyncStub:
        if self._runs is None:
            self._runs = runs_pb2_grpc.RunsStub(self._chan())
        return self._runs

    async def _unary(self, call: Awaitable[T], runs_api: bool = False) -> T:
        try:
            return await call
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc, runs_api) from None

    async def _stream(self, call: AsyncIterable[T], runs_api: bool = False) -> AsyncIterator[T]:
        try:
            async for item in call:
                yield item
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc, runs_api) from None

    def _error(self, exc: grpc.aio.AioRpcError, runs_api: bool) -> CniscopeError:
        if runs_api and exc.code() == grpc.StatusCode.UNIMPLEMENTED:
            return RunsUnavailable(f"no runs API on this collector ({self.address})")
        return rpc_error(exc, self.address)

    # ---- Cluster ---------------------------------------------------------------------------------
    async def events(self) -> AsyncIterator[cluster_pb2.ClusterEvent | ConnectionState]:
        """Watch forever: reconnects with backoff, yields ConnectionState on every change."""
        delay = 0.5
        while True:
            try:
                call = self.cluster.Watch(cluster_pb2.WatchRequest(include_samples=False), metadata=self._md)
                first = True
                async for ev in call:
                    if first:
                        yield ConnectionState(True)
                        first, delay = False, 0.5
                    if self._record is not None:
                        self._record.event(ev)
                    yield ev
                detail = "collector ended the stream"
            except grpc.aio.AioRpcError as exc:
                detail = f"{exc.code().name}: {exc.details()}"
            yield ConnectionState(False, detail)
            await asyncio.sleep(delay)
            delay = min(delay * 1.6, 5.0)

    async def list_nodes(self, deadline: float = 10.0) -> list[cluster_pb2.NodeState]:
        """The nodes the collector sees, every page of them; ``deadline``: seconds each page may take."""
        nodes: list[cluster_pb2.NodeState] = []
        token = ""
        while True:
            resp = await self._unary(self.cluster.ListNodes(cluster_pb2.ListNodesRequest(page_token=token),
                                                            timeout=deadline, metadata=self._md))
            nodes += resp.nodes
            if not resp.next_page_token or not resp.nodes:
                return nodes
            token = resp.next_page_token

    async def run_probe(self, req: common_pb2.ProbeRequest) -> AsyncIterator[cluster_pb2.ProbeUpdate]:
        async for upd in self._stream(self.cluster.RunProbe(req, metadata=self._md)):
            if upd.WhichOneof("body") == "result" and self._record is not None:
                self._record.event(cluster_pb2.ClusterEvent(probe_result=upd.result))
            yield upd

    async def probe_result(self, req: common_pb2.ProbeRequest) -> common_pb2.ProbeResult:
        """Run one probe and return its result (progress is dropped)."""
        async for upd in self.run_probe(req):
            if upd.WhichOneof("body") == "result":
                return upd.result
        raise CniscopeError("the collector ended the probe without a result")

    async def probe_history(self, kind: str, src: str, dst: str, limit: int = 50) -> list[common_pb2.ProbeResult]:
        req = cluster_pb2.ListProbeResultsRequest(kind=kind, source_node=src, target_node=dst, limit=limit)
        resp = await self._unary(self.cluster.ListProbeResults(req, metadata=self._md, timeout=5))
        return sorted(resp.results, key=lambda r: r.finished_unix_nano)

    # ---- Runs --------------------------------------------------------------------------------------
    def start_run(self, req: runs_pb2.StartRunRequest) -> AsyncIterator[runs_pb2.RunUpdate]:
        return self._stream(self.runs.StartRun(req, metadata=self._md), runs_api=True)

    def start_service_scaling(self, req: runs_pb2.ServiceScalingRequest) -> AsyncIterator[runs_pb2.RunUpdate]:
        return self._stream(self.runs.StartServiceScaling(req, metadata=self._md), runs_api=True)

    async def cancel_run(self, run_id: str) -> runs_pb2.Run:
        return await self._unary(self.runs.CancelRun(runs_pb2.RunRef(run_id=run_id), metadata=self._md), True)

    async def get_run(self, run_id: str) -> runs_pb2.Run:
        return await self._unary(self.runs.GetRun(runs_pb2.RunRef(run_id=run_id), metadata=self._md), True)

    async def delete_run(self, run_id: str) -> bool:
        resp = await self._unary(self.runs.DeleteRun(runs_pb2.RunRef(run_id=run_id), metadata=self._md), True)
        return resp.deleted

    async def compare(self, req: runs_pb2.CompareRequest) -> runs_pb2.CompareResponse:
        return await self._unary(self.runs.Compare(req, metadata=self._md), True)

    async def stored_runs(self, limit: int = 0, deadline: float | None = None) -> list[runs_pb2.Run]:
        resp = await self._unary(self.runs.ListRuns(runs_pb2.ListRunsRequest(limit=limit), metadata=self._md,
                                                    timeout=deadline), True)
        return list(resp.runs)

    async def list_runs(self) -> list[RunSummary]:
        runs = [run_from_proto(r) for r in await self.stored_runs(LIST_RUNS, deadline=5)]
        if self._record is not None:
            self._record.runs(runs)
        return runs

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
        if self._record is not None:
            self._record.close()
            self._record = None


async def list_nodes(address: str, deadline: float = 10.0) -> list[cluster_pb2.NodeState]:
    """The nodes the collector at ``address`` sees, over a connection of their own."""
    async with CollectorClient(address) as client:
        return await client.list_nodes(deadline)
