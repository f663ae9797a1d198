"""The TUI's view of the collector: a client interface with a gRPC implementation and a
recorded-stream implementation (``--replay``), so tests and demos are deterministic."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Protocol

import grpc
from google.protobuf import json_format

from cniscope.api.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2, runs_pb2, runs_pb2_grpc
from cniscope.core import grpcutil, security
from cniscope.core.config import read_token
from cniscope.core.errors import CniscopeError, ConnectionFailed
from cniscope.tui.run_compare import RunSummary, RunsUnavailable, run_from_dict, run_from_proto, run_to_dict

log = logging.getLogger("cniscope.tui")
LIST_RUNS = 500  # newest first


class ClusterClient(Protocol):
    address: str

    def events(self) -> AsyncIterator[cluster_pb2.ClusterEvent | ConnectionState]: ...
    def run_probe(self, req: common_pb2.ProbeRequest) -> AsyncIterator[cluster_pb2.ProbeUpdate]: ...
    async def probe_history(self, kind: str, src: str, dst: str, limit: int = 50) -> list[common_pb2.ProbeResult]:
        """Stored results for one pair, newest last."""
        ...
    async def list_runs(self) -> list[RunSummary]:
        """Stored runs; raises RunsUnavailable when the collector has no runs API."""
        ...
    async def close(self) -> None: ...


class ConnectionState:
    """Emitted by ``events()`` when the link to the collector goes up or down."""

    def __init__(self, connected: bool, detail: str = "") -> None:
        self.connected = connected
        self.detail = detail

    def __repr__(self) -> str:
        return f"ConnectionState({self.connected}, {self.detail!r})"


class GrpcClusterClient:
    def __init__(self, address: str, record: str | None = None, token_file: str = "") -> None:
        self.address = address
        # grpc.aio binds a channel to the running event loop: create it on first use, inside the app
        self._channel: grpc.aio.Channel | None = None
        self._stub_: cluster_pb2_grpc.ClusterAsyncStub | None = None
        self._runs_: runs_pb2_grpc.RunsAsyncStub | None = None
        tok = read_token(token_file)
        self._md: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {tok}"),) if tok else ()
        self._record: IO[str] | None = open(record, "w") if record else None  # noqa: SIM115
        self._t0 = time.monotonic()

    def _chan(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = grpcutil.insecure_channel(self.address,
                                                      credentials=security.client_credentials_from_env())
        return self._channel

    @property
    def _stub(self) -> cluster_pb2_grpc.ClusterAsyncStub:
        if self._stub_ is None:
            self._stub_ = cluster_pb2_grpc.ClusterStub(self._chan())
        return self._stub_

    @property
    def _runs(self) -> runs_pb2_grpc.RunsAsyncStub:
        if self._runs_ is None:
            self._runs_ = runs_pb2_grpc.RunsStub(self._chan())
        return self._runs_

    async def events(self) -> AsyncIterator[cluster_pb2.ClusterEvent | ConnectionState]:
        """Watch forever: reconnects with backoff, yields ConnectionState on every change."""
        delay = 0.5
        while True:
            try:
                call = self._stub.Watch(cluster_pb2.WatchRequest(include_samples=False), metadata=self._md)
                first = True
                async for ev in call:
                    if first:
                        yield ConnectionState(True)
                        first, delay = False, 0.5
                    self._write(ev)
                    yield ev
                detail = "collector ended the stream"
            except grpc.aio.AioRpcError as exc:
                detail = f"{exc.code().name}: {exc.details()}"
            yield ConnectionState(False, detail)
            await asyncio.sleep(delay)
            delay = min(delay * 1.6, 5.0)

    def _write(self, ev: cluster_pb2.ClusterEvent) -> None:
        if self._record is not None:
            d = json_format.MessageToDict(ev, preserving_proto_field_name=True)
            self._record.write(json.dumps({"t": round(time.monotonic() - self._t0, 3), "event": d}) + "\n")
            self._record.flush()

    async def run_probe(self, req: common_pb2.ProbeRequest) -> AsyncIterator[cluster_pb2.ProbeUpdate]:
        try:
            async for upd in self._stub.RunProbe(req, metadata=self._md):
                if upd.WhichOneof("body") == "result":
                    self._write(cluster_pb2.ClusterEvent(probe_result=upd.result))
                yield upd
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                raise ConnectionFailed(f"collector {self.address} unreachable: {exc.details()}") from None
            raise CniscopeError(exc.details() or exc.code().name,
                                title=exc.code().name.lower().replace("_", " ")) from None

    async def probe_history(self, kind: str, src: str, dst: str, limit: int = 50) -> list[common_pb2.ProbeResult]:
        req = cluster_pb2.ListProbeResultsRequest(kind=kind, source_node=src, target_node=dst, limit=limit)
        try:
            resp = await self._stub.ListProbeResults(req, metadata=self._md, timeout=5)
        except grpc.aio.AioRpcError as exc:
            raise ConnectionFailed(f"probe history from {self.address}: {exc.details()}") from None
        return sorted(resp.results, key=lambda r: r.finished_unix_nano)

    async def list_runs(self) -> list[RunSummary]:
        try:
            resp = await self._runs.ListRuns(runs_pb2.ListRunsRequest(limit=LIST_RUNS), metadata=self._md, timeout=5)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                raise RunsUnavailable(f"no runs API on this collector ({self.address})") from None
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise ConnectionFailed(f"runs from {self.address}: {exc.details()}") from None
            raise CniscopeError(exc.details() or exc.code().name,
                                title=exc.code().name.lower().replace("_", " ")) from None
        runs = [run_from_proto(r) for r in resp.runs]
        if self._record is not None:
            self._record.write(json.dumps({"t": round(time.monotonic() - self._t0, 3),
                                           "runs": [run_to_dict(r) for r in runs]}) + "\n")
            self._record.flush()
        return runs

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        if self._record is not None:
            self._record.close()


class ReplayClient:
    """Replays a recording (JSON lines: {"t": seconds, "event": ClusterEvent as JSON}; ``.gz`` too).

    A line may instead carry {"runs": [...]} (stored runs as the Runs screen shows them); a recording
    without such a line behaves like a collector without a runs API.
    """

    def __init__(self, path: str | Path, speed: float = 0.0) -> None:
        self.address = f"replay:{Path(path).name}"
        self.path = Path(path)
        self.speed = speed  # 0: as fast as possible; 1: real time
        self.probe_results: dict[tuple[str, str, str], common_pb2.ProbeResult] = {}
        self.history: list[common_pb2.ProbeResult] = []
        self.runs: list[RunSummary] | None = None
        self.done = False  # every recorded event has been yielded

    def load(self) -> list[tuple[float, cluster_pb2.ClusterEvent]]:
        out = []
        try:
            if self.path.suffix == ".gz":
                lines = gzip.decompress(self.path.read_bytes()).decode().splitlines()
            else:
                lines = self.path.read_text().splitlines()
        except OSError as exc:
            raise CniscopeError(f"cannot read recording {self.path}: {exc.strerror}") from None
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if "runs" in obj:
                    self.runs = [run_from_dict(r) for r in obj["runs"]]
                    continue
                ev = json_format.ParseDict(obj["event"], cluster_pb2.ClusterEvent())
            except (ValueError, KeyError, TypeError, json_format.ParseError) as exc:
                raise CniscopeError(f"{self.path}:{n}: not a recorded event ({exc})") from None
            out.append((float(obj.get("t", 0.0)), ev))
            if ev.WhichOneof("body") == "probe_result":
                r = ev.probe_result
                self.probe_results[(r.kind, r.source_node, r.target_node)] = r
                self.history.append(r)
        return out

    async def events(self) -> AsyncIterator[cluster_pb2.ClusterEvent | ConnectionState]:
        items = self.load()
        yield ConnectionState(True, "replay")
        last = 0.0
        for t, ev in items:
            if self.speed > 0 and t > last:
                await asyncio.sleep((t - last) / self.speed)
            last = t
            yield ev
        self.done = True
        await asyncio.Event().wait()  # a replay stays "connected" and idle at its end

    async def run_probe(self, req: common_pb2.ProbeRequest) -> AsyncIterator[cluster_pb2.ProbeUpdate]:
        rec = self.probe_results.get((req.kind, req.source_node, req.target_node))
        yield cluster_pb2.ProbeUpdate(progress=common_pb2.ProbeProgress(fraction=0.5, message="replay"))
        if rec is None:
            rec = common_pb2.ProbeResult(kind=req.kind, source_node=req.source_node, target_node=req.target_node,
                                         path=req.path, ok=False, error="no such probe in the recording")
        yield cluster_pb2.ProbeUpdate(result=rec)

    async def probe_history(self, kind: str, src: str, dst: str, limit: int = 50) -> list[common_pb2.ProbeResult]:
        found = [r for r in self.history if (r.kind, r.source_node, r.target_node) == (kind, src, dst)]
        return found[-limit:]

    async def list_runs(self) -> list[RunSummary]:
        if self.runs is None:
            raise RunsUnavailable("no runs API on this collector (the recording holds no runs)")
        return list(self.runs)

    async def close(self) -> None:
        return None
