"""The probe kinds, each declared once: one :class:`ProbeSpec` row per kind (see ``probespec``).

Caps here are enforced by the collector before dispatch and again by the agent before any packet
leaves; the CLI and the TUI form render their options from the same rows, the collector schedules
and serves by them, and runs and reports take their suite items and metrics from them. The agent
runs each kind with the implementation registered under the same name in ``cniscope.agent.probes``.
The order of the rows is the order of the report's tables and of a suite's items.
"""

from __future__ import annotations

from cniscope.core.params import Param, ParamSet
from cniscope.core.probespec import (
    HIGHER,
    LOWER,
    BenchFigure,
    BenchGroup,
    Figure,
    KindTable,
    ProbeSpec,
)

KINDS = KindTable()
spec_for = KINDS.get

_DURATION = Param("duration", "float", 5.0, "test length", min=1, max=60, unit="s")

KINDS.register(ProbeSpec(
    "tcp", "TCP throughput (iperf3)",
    ParamSet((
        _DURATION,
        Param("streams", "int", 1, "parallel streams", min=1, max=16),
        Param("reverse", "bool", False, "target sends, source receives"),
        Param("bbr", "bool", False, "use the BBR congestion control"),
    )),
    figures=(Figure("received_gbps", "TCP throughput", "Gbit/s", HIGHER),
             Figure("retransmits", "TCP retransmits", "", LOWER)),
    benchmarks=(BenchGroup("tcp", "TCP throughput",
                           (BenchFigure("gbps", "received_gbps", 2), BenchFigure("retransmits", "retransmits", 0)),
                           {"standard": ({"duration": 10},), "quick": ({"duration": 1},)}),),
    served=True, bandwidth=True,
))
KINDS.register(ProbeSpec(
    "udp", "UDP throughput, loss and jitter (iperf3 -u)",
    ParamSet((
        _DURATION,
        Param("rate_mbps", "float", 100.0, "offered rate", min=0.1, max=25_000, unit="Mbit/s"),
        Param("length", "int", 1400, "datagram payload", min=64, max=8972, unit="B"),
        Param("streams", "int", 1, "parallel streams", min=1, max=16),
    )),
    figures=(Figure("achieved_gbps", "UDP throughput", "Gbit/s", HIGHER),
             Figure("loss_pct", "UDP loss", "%", LOWER),
             Figure("jitter_ms", "UDP jitter", "ms", LOWER)),
    benchmarks=(BenchGroup("udp", "UDP throughput and loss",
                           (BenchFigure("gbps", "achieved_gbps", 3), BenchFigure("loss_pct", "loss_pct", 2),
                            BenchFigure("jitter_ms", "jitter_ms", 3)),
                           {"standard": ({"duration": 10, "rate_mbps": 1000},),
                            "quick": ({"duration": 1, "rate_mbps": 20},)}),),
    served=True, bandwidth=True,
))
KINDS.register(ProbeSpec(
    "rtt", "ICMP echo round-trip time (ping)",
    ParamSet((
        Param("count", "int", 10, "echo requests", min=1, max=1000),
        Param("interval", "float", 0.2, "seconds between requests", min=0.01, max=5, unit="s"),
        Param("size", "int", 56, "payload bytes", min=0, max=8972, unit="B"),
        Param("timeout", "float", 2.0, "wait for the last reply", min=0.1, max=30, unit="s"),
    )),
    figures=(Figure("p50_us", "RTT p50", "µs", LOWER),
             Figure("p99_us", "RTT p99", "µs", LOWER),
             Figure("loss_pct", "RTT loss", "%", LOWER)),
    benchmarks=(BenchGroup("rtt", "Pod-to-pod RTT", (BenchFigure("p50", "p50_us", 0), BenchFigure("p99", "p99_us", 0)),
                           {"standard": ({"count": 100, "interval": 0.05},),
                            "quick": ({"count": 20, "interval": 0.02},)}),),
    privileges=("raw_icmp",),
))
KINDS.register(ProbeSpec(
    "connect", "TCP connect+close setup time (Connection: close)",
    ParamSet((
        Param("count", "int", 200, "sequential connections", min=1, max=20_000),
        Param("port", "int", 0, "target port (0: the agent's accept port)", min=0, max=65535),
        Param("timeout", "float", 1.0, "per-connection timeout", min=0.01, max=10, unit="s"),
    )),
    figures=(Figure("p50_us", "connect setup p50", "µs", LOWER),
             Figure("p99_us", "connect setup p99", "µs", LOWER),
             Figure("conn_per_s", "connections/s", "1/s", HIGHER),
             Figure("mean_us", "connect setup mean", "µs", LOWER)),
    benchmarks=(BenchGroup("connect", "Connection setup (Connection: close)",
                           (BenchFigure("mean", "mean_us", 1), BenchFigure("p99", "p99_us", 1),
                            BenchFigure("per_s", "conn_per_s", 0)),
                           {"standard": ({"count": 500},), "quick": ({"count": 50},)}),
                BenchGroup("svc_connect", "Pod to Service (ClusterIP): connection setup (Connection: close)",
                           (BenchFigure("mean", "mean_us", 1), BenchFigure("p99", "p99_us", 1),
                            BenchFigure("per_s", "conn_per_s", 0)),
                           {"standard": ({"count": 500},), "quick": ({"count": 50},)}, path="service")),
))
_HTTP_RUN = {"keepalive": True, "concurrency": 16}
KINDS.register(ProbeSpec(
    "http", "HTTP/1.1 GET load at a fixed QPS, or max QPS",
    ParamSet((
        _DURATION,
        Param("qps", "int", 100, "requests per second (fixed-rate mode)", min=1, max=20_000),
        Param("max_qps", "bool", False, "send as fast as answers come back (bandwidth probe)"),
        Param("keepalive", "bool", True, "reuse connections (false: Connection: close)"),
        Param("concurrency", "int", 8, "connections in flight", min=1, max=256),
    )),
    figures=(Figure("actual_qps", "HTTP actual QPS", "1/s", HIGHER),
             Figure("p50_ms", "HTTP p50", "ms", LOWER),
             Figure("p99_ms", "HTTP p99", "ms", LOWER)),
    benchmarks=(
        BenchGroup("http", "HTTP at a fixed QPS",
                   (BenchFigure("qps", "actual_qps", 1), BenchFigure("p50", "p50_ms", 2),
                    BenchFigure("p99", "p99_ms", 2)),
                   {"standard": ({"qps": 1000, "duration": 10, **_HTTP_RUN}, {"qps": 5000, "duration": 10, **_HTTP_RUN}),
                    "quick": ({"qps": 200, "duration": 1, **_HTTP_RUN},)},
                   arg_param="qps"),
        BenchGroup("httpmax", "HTTP maximum QPS",
                   (BenchFigure("qps", "actual_qps", 0, "max QPS"),
                    BenchFigure("p99", "p99_ms", 2, "HTTP p99 at max QPS")),
                   {"standard": ({"max_qps": True, "duration": 10, "concurrency": 32},),
                    "quick": ({"max_qps": True, "duration": 1, "concurrency": 4},)}),
        # every request a new connection: the Service datapath translates each connect (socket LB)
        # or each new flow's first packet (kube-proxy's NAT rules), never a kept-alive stream
        BenchGroup("svc_http", "Pod to Service (ClusterIP): HTTP with Connection: close",
                   (BenchFigure("qps", "actual_qps", 1), BenchFigure("p50", "p50_ms", 2),
                    BenchFigure("p99", "p99_ms", 2)),
                   {"standard": ({"qps": 500, "duration": 10, "keepalive": False, "concurrency": 16},),
                    "quick": ({"qps": 100, "duration": 1, "keepalive": False, "concurrency": 4},)},
                   path="service"),
    ),
    bandwidth_param="max_qps",
))
KINDS.register(ProbeSpec(
    "dns", "DNS lookups through a resolver",
    ParamSet((
        Param("count", "int", 50, "lookups", min=1, max=10_000),
        Param("name", "str", "kubernetes.default.svc.cluster.local", "name to resolve", max_len=253),
        Param("resolver", "str", "", "resolver address (empty: the pod's /etc/resolv.conf)", max_len=64),
        Param("rdtype", "choice", "A", "record type", choices=("A", "AAAA", "SRV", "TXT")),
        Param("timeout", "float", 2.0, "per-lookup timeout", min=0.05, max=10, unit="s"),
    )),
    figures=(Figure("p50_ms", "DNS p50", "ms", LOWER), Figure("p99_ms", "DNS p99", "ms", LOWER),
             Figure("failures", "DNS failures", "", LOWER)),
    benchmarks=(BenchGroup("dns", "DNS resolution", (BenchFigure("p50", "p50_ms", 2), BenchFigure("p99", "p99_ms", 2)),
                           {"standard": ({"count": 100},), "quick": ({"count": 20},)}),),
    needs_target=False, target_param="resolver",
))
