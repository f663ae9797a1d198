"""Tracer registry: name → class taking an optional network-namespace path to filter on."""

from __future__ import annotations

from collections.abc import Callable

from cniscope.agent.tracers.bcc_tracer import BccTracer
from cniscope.agent.tracers.drops import Drops
from cniscope.agent.tracers.retrans import Retrans
from cniscope.agent.tracers.tcpconnlat import TcpConnLat
from cniscope.core.registry import Registry

TracerFactory = Callable[[str | None], BccTracer]

TRACERS: Registry[TracerFactory] = Registry("tracer")
TRACERS.register("tcpconnlat", TcpConnLat)
TRACERS.register("retrans", Retrans)
TRACERS.register("drops", Drops)
