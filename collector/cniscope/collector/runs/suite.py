"""Probe suites as data: which probe, on which path, with which parameters, yielding which figures.

``standard`` follows the published study (iperf3 10 s, HTTP at 1,000 and 5,000 QPS and max QPS,
100 DNS lookups); ``quick`` is the same shape with short durations and modest rates, for labs, CI and
small machines. The pseudo-items ``footprint`` (CNI agent samples during the run) and ``census`` (NAT
rules from the agents' iptables/nft census) need no probe.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cniscope.core.errors import ValidationError


@dataclass(frozen=True)
class Item:
    name: str
    kind: str                                   # probe kind, or "footprint" / "census"
    figures: Mapping[str, str]                  # metric key → the probe's figure name
    params: Mapping[str, str] = field(default_factory=dict)
    path: str = "pod"
    needs_target: bool = True

    @property
    def is_probe(self) -> bool:
        return self.kind not in ("footprint", "census")


def _http(qps: int, duration: str) -> Item:
    return Item(f"http@{qps}", "http", {f"http@{qps}.qps": "actual_qps", f"http@{qps}.p50": "p50_ms",
                                         f"http@{qps}.p99": "p99_ms"},
                {"qps": str(qps), "duration": duration, "keepalive": "true", "concurrency": "16"})


_RTT = {"rtt.p50": "p50_us", "rtt.p99": "p99_us"}
_TCP = {"tcp.gbps": "received_gbps", "tcp.retransmits": "retransmits"}
_UDP = {"udp.gbps": "achieved_gbps", "udp.loss_pct": "loss_pct", "udp.jitter_ms": "jitter_ms"}
_CONNECT = {"connect.mean": "mean_us", "connect.p99": "p99_us", "connect.per_s": "conn_per_s"}
_MAX = {"httpmax.qps": "actual_qps", "httpmax.p99": "p99_ms"}
_DNS = {"dns.p50": "p50_ms", "dns.p99": "p99_ms"}
_FOOT = {"cni.cpu_m": "cni_cpu_millicores", "cni.mem_mib": "cni_rss_bytes"}
_CENSUS = {"nat.rules": "nat_rules"}

SUITES: dict[str, tuple[Item, ...]] = {
    "standard": (
        Item("tcp", "tcp", _TCP, {"duration": "10"}),
        Item("udp", "udp", _UDP, {"duration": "10", "rate_mbps": "1000"}),
        Item("rtt", "rtt", _RTT, {"count": "100", "interval": "0.05"}),
        Item("connect", "connect", _CONNECT, {"count": "500"}),
        _http(1000, "10"),
        _http(5000, "10"),
        Item("httpmax", "http", _MAX, {"max_qps": "true", "duration": "10", "concurrency": "32"}),
        Item("dns", "dns", _DNS, {"count": "100"}, needs_target=False),
        Item("footprint", "footprint", _FOOT, needs_target=False),
        Item("census", "census", _CENSUS, needs_target=False),
    ),
    "quick": (
        Item("tcp", "tcp", _TCP, {"duration": "1"}),
        Item("udp", "udp", _UDP, {"duration": "1", "rate_mbps": "20"}),
        Item("rtt", "rtt", _RTT, {"count": "20", "interval": "0.02"}),
        Item("connect", "connect", _CONNECT, {"count": "50"}),
        _http(200, "1"),
        Item("httpmax", "http", _MAX, {"max_qps": "true", "duration": "1", "concurrency": "4"}),
        Item("dns", "dns", _DNS, {"count": "20"}, needs_target=False),
        Item("footprint", "footprint", _FOOT, needs_target=False),
        Item("census", "census", _CENSUS, needs_target=False),
    ),
}


def items(suite: str, only: list[str] | tuple[str, ...] = ()) -> list[Item]:
    try:
        all_items = SUITES[suite or "standard"]
    except KeyError:
        raise ValidationError(f"unknown suite {suite!r}; one of {', '.join(SUITES)}") from None
    if not only:
        return list(all_items)
    names = {i.name for i in all_items}
    bad = [o for o in only if o not in names]
    if bad:
        raise ValidationError(f"suite {suite} has no item {', '.join(bad)}; items: {', '.join(sorted(names))}")
    return [i for i in all_items if i.name in only]


def choose_pairs(nodes: list[str], spec: str) -> list[tuple[str, str]]:
    """``auto``: one cross-node pair (the first two nodes by name); ``all``: a ring over every node;
    or an explicit ``a:b,c:d`` list."""
    nodes = sorted(nodes)
    spec = (spec or "auto").strip()
    if spec in ("auto", "all"):
        if len(nodes) < 2:
            raise ValidationError(f"a run needs two connected nodes, have {len(nodes)}")
        if spec == "auto":
            return [(nodes[0], nodes[1])]
        return [(nodes[i], nodes[(i + 1) % len(nodes)]) for i in range(len(nodes))] if len(nodes) > 2 \
            else [(nodes[0], nodes[1])]
    out = []
    for part in spec.split(","):
        a, sep, b = part.strip().partition(":")
        if not sep or not a or not b or a == b:
            raise ValidationError(f"pair {part!r} is not SOURCE:TARGET with two different nodes")
        for n in (a, b):
            if n not in nodes:
                raise ValidationError(f"node {n!r} is not connected ({', '.join(nodes) or 'none'})")
        out.append((a, b))
    return out
