"""The probe kinds and their parameters, declared once (see ``params.py``).

Caps here are enforced by the collector before dispatch and again by the agent before any packet
leaves; the CLI and the TUI form render their options from the same table.
"""

from __future__ import annotations

from dataclasses import dataclass

from cniscope.core.errors import ValidationError
from cniscope.core.params import Param, ParamSet

PATHS = ("host", "pod", "service")


@dataclass(frozen=True)
class ProbeSpec:
    kind: str
    summary: str
    params: ParamSet
    bandwidth: bool = False  # a bandwidth probe owns both nodes while it runs

    def expected_seconds(self, values: dict[str, object]) -> float:
        """How long the probe should take, for timeouts and progress."""
        for key in ("duration",):
            v = values.get(key)
            if isinstance(v, int | float):
                return float(v)
        count = values.get("count")
        interval = values.get("interval")
        if isinstance(count, int | float) and isinstance(interval, int | float):
            return float(count) * float(interval)
        return 5.0


_DURATION = Param("duration", "float", 5.0, "test length", min=1, max=60, unit="s")

SPECS: dict[str, ProbeSpec] = {}


def _register(spec: ProbeSpec) -> None:
    if spec.kind in SPECS:
        raise ValueError(f"duplicate probe kind {spec.kind!r}")
    SPECS[spec.kind] = spec


_register(ProbeSpec(
    "rtt", "ICMP echo round-trip time (ping)",
    ParamSet((
        Param("count", "int", 10, "echo requests", min=1, max=1000),
        Param("interval", "float", 0.2, "seconds between requests", min=0.01, max=5, unit="s"),
        Param("size", "int", 56, "payload bytes", min=0, max=8972, unit="B"),
        Param("timeout", "float", 2.0, "wait for the last reply", min=0.1, max=30, unit="s"),
    )),
))
_register(ProbeSpec(
    "tcp", "TCP throughput (iperf3)",
    ParamSet((
        _DURATION,
        Param("streams", "int", 1, "parallel streams", min=1, max=16),
        Param("reverse", "bool", False, "target sends, source receives"),
        Param("bbr", "bool", False, "use the BBR congestion control"),
    )),
    bandwidth=True,
))
_register(ProbeSpec(
    "udp", "UDP throughput, loss and jitter (iperf3 -u)",
    ParamSet((
        _DURATION,
        Param("rate_mbps", "float", 100.0, "offered rate", min=0.1, max=25_000, unit="Mbit/s"),
        Param("length", "int", 1400, "datagram payload", min=64, max=8972, unit="B"),
        Param("streams", "int", 1, "parallel streams", min=1, max=16),
    )),
    bandwidth=True,
))
_register(ProbeSpec(
    "connect", "TCP connect+close setup time (Connection: close)",
    ParamSet((
        Param("count", "int", 200, "sequential connections", min=1, max=20_000),
        Param("port", "int", 0, "target port (0: the agent's accept port)", min=0, max=65535),
        Param("timeout", "float", 1.0, "per-connection timeout", min=0.01, max=10, unit="s"),
    )),
))
_register(ProbeSpec(
    "http", "HTTP/1.1 GET load at a fixed QPS, or max QPS",
    ParamSet((
        _DURATION,
        Param("qps", "int", 100, "requests per second (fixed-rate mode)", min=1, max=20_000),
        Param("max_qps", "bool", False, "send as fast as answers come back (bandwidth probe)"),
        Param("keepalive", "bool", True, "reuse connections (false: Connection: close)"),
        Param("concurrency", "int", 8, "connections in flight", min=1, max=256),
    )),
))
_register(ProbeSpec(
    "dns", "DNS lookups through a resolver",
    ParamSet((
        Param("count", "int", 50, "lookups", min=1, max=10_000),
        Param("name", "str", "kubernetes.default.svc.cluster.local", "name to resolve", max_len=253),
        Param("resolver", "str", "", "resolver address (empty: the pod's /etc/resolv.conf)", max_len=64),
        Param("rdtype", "choice", "A", "record type", choices=("A", "AAAA", "SRV", "TXT")),
        Param("timeout", "float", 2.0, "per-lookup timeout", min=0.05, max=10, unit="s"),
    )),
))


def spec_for(kind: str) -> ProbeSpec:
    try:
        return SPECS[kind]
    except KeyError:
        raise ValidationError(f"unknown probe kind {kind!r}; known: {', '.join(SPECS)}") from None


def is_bandwidth(kind: str, values: dict[str, object]) -> bool:
    spec = spec_for(kind)
    return spec.bandwidth or (kind == "http" and bool(values.get("max_qps")))


def validate_path(path: str) -> str:
    p = path or "host"
    if p not in PATHS:
        raise ValidationError(f"path must be one of {', '.join(PATHS)}, got {path!r}")
    return p
