"""What a screen may ask of the app that shows it: the model, the client's address and stored runs,
the clock, and probes. Screens name this, never the app class, so the app can import every screen."""

from __future__ import annotations

from typing import Protocol

from cniscope.api.v1 import common_pb2
from cniscope.client.client_protocol import ClusterClient
from cniscope.tui.cluster_model import ClusterModel


class ScreenHost(Protocol):
    model: ClusterModel
    client: ClusterClient
    probe_line: str   # the last probe's one-line outcome, or what keys do

    def now_ns(self) -> int: ...

    async def run_probe(self, req: common_pb2.ProbeRequest) -> common_pb2.ProbeResult:
        """Run one probe, keeping the model up to date; raises CniscopeError."""
        ...

    def fire_probe(self, req: common_pb2.ProbeRequest) -> object:
        """Run one probe in the background; the outcome lands in ``probe_line`` and a notification."""
        ...

    def push_probe_form(self, source: str | None = None, target: str | None = None, kind: str = "rtt") -> None: ...

    def open_node(self, name: str) -> None: ...
