"""Probe registry: one module per probe kind, registered under its name in the probe table
(``cniscope.core.probekinds``), which declares everything else about the kind."""

from __future__ import annotations

from cniscope.agent.probes.connect import ConnectProbe
from cniscope.agent.probes.dns import DnsProbe
from cniscope.agent.probes.http import HttpProbe
from cniscope.agent.probes.probe import Probe
from cniscope.agent.probes.rtt import RttProbe
from cniscope.agent.probes.tcp import TcpProbe
from cniscope.agent.probes.udp import UdpProbe
from cniscope.core.registry import Registry

PROBES: Registry[Probe] = Registry("probe")
PROBES.register("tcp", TcpProbe())
PROBES.register("udp", UdpProbe())
PROBES.register("rtt", RttProbe())
PROBES.register("connect", ConnectProbe())
PROBES.register("http", HttpProbe())
PROBES.register("dns", DnsProbe())
