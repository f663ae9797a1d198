"""What a live view needs from the collector, whichever implementation serves it: the gRPC client or
a recording."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from cniscope.api.v1 import cluster_pb2, common_pb2
from cniscope.client.run_summary import RunSummary


class ConnectionState:
    """Emitted by ``events()`` when the link to the collector goes up or down."""

    def __init__(self, connected: bool, detail: str = "") -> None:
        self.connected = connected
        self.detail = detail

    def __repr__(self) -> str:
        return f"ConnectionState({self.connected}, {self.detail!r})"


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
