"""Node facts read out of capability reports: each accessor reads the typed findings of one
inspection unit (``UnitReport.detail``) and answers ``None`` (or nothing) when the unit is missing,
failed, or does not apply on that node.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cniscope.api.v1 import capabilities_pb2 as cap
from cniscope.api.v1 import common_pb2

SPARK = "▁▂▃▄▅▆▇█"
VIRTUAL_DRIVERS = {"bridge", "tun", "tap", "ifb", "macvlan", "vxlan", "dummy", "loopback", ""}


def sparkline(values: Iterable[float], width: int = 8) -> str:
    vals = list(values)[-width:]
    if not vals:
        return " " * width
    lo, hi = min(vals), max(vals)
    span = hi - lo
    chars = [SPARK[0] if span <= 0 else SPARK[min(7, int((v - lo) / span * 7.999))] for v in vals]
    return "".join(chars).rjust(width)


@dataclass(frozen=True)
class Unit:
    report: common_pb2.UnitReport

    @property
    def name(self) -> str:
        return self.report.name

    @property
    def ok(self) -> bool:
        return self.report.ok

    @property
    def available(self) -> bool:
        return self.report.available

    @property
    def error(self) -> str:
        return self.report.error

    @property
    def summary(self) -> str:
        return self.report.summary

    @property
    def duration(self) -> float:
        return self.report.duration_seconds

    @property
    def state(self) -> str:
        if not self.available:
            return "unavailable"
        return "ok" if self.ok else "error"


def units(report: common_pb2.CapabilityReport) -> dict[str, Unit]:
    return {u.name: Unit(u) for u in report.units}


def find_unit(us: Mapping[str, Unit], name: str) -> Unit | None:
    return us.get(name)


def _findings(us: Mapping[str, Unit], name: str) -> common_pb2.UnitReport | None:
    """The report of a unit that ran and carries its typed findings."""
    u = us.get(name)
    if u is None or not (u.ok and u.available) or u.report.WhichOneof("detail") != name:
        return None
    return u.report


# ---- iptables / nftables ----------------------------------------------------------------------
def _ipt(us: Mapping[str, Unit]) -> cap.IptablesDetail | None:
    r = _findings(us, "iptables")
    return r.iptables if r is not None else None


def nat_rules(us: Mapping[str, Unit]) -> float | None:
    """NAT rules of the backend kube-proxy uses (else the biggest NAT table seen)."""
    d = _ipt(us)
    if d is None:
        return None
    if d.kube_proxy.HasField("nat_rules"):
        return float(d.kube_proxy.nat_rules)
    ran = [b for b in (d.iptables_nft, d.iptables_legacy) if b.ran]
    if not ran:
        return None
    return float(max(b.tables["nat"].rules if "nat" in b.tables else 0 for b in ran))


def kube_proxy_mode(us: Mapping[str, Unit]) -> str | None:
    d = _ipt(us)
    return d.kube_proxy.mode or None if d is not None else None


def iptables_census(us: Mapping[str, Unit]) -> list[tuple[str, str, float]]:
    """(backend table, chain, rules) rows, biggest first, over iptables-nft, -legacy and native nft."""
    d = _ipt(us)
    if d is None:
        return []
    rows: list[tuple[str, str, float]] = []
    for short, b in (("nft", d.iptables_nft), ("legacy", d.iptables_legacy)):
        for tname, t in b.tables.items():
            rows += [(f"{short} {tname}", cname, float(c.rules)) for cname, c in t.chains.items() if c.rules > 0]
    for tname, nt in d.nft.tables.items():
        rows += [(f"native {tname}", cname, float(c.rules)) for cname, c in nt.rules_by_chain.items() if c.rules > 0]
    rows.sort(key=lambda r: (-r[2], r[0], r[1]))
    return rows


def fingerprint(us: Mapping[str, Unit]) -> dict[str, str]:
    """The node's own view of the cluster fingerprint (the ``cluster`` unit), as strings."""
    r = _findings(us, "cluster")
    if r is None or not r.cluster.HasField("fingerprint"):
        return {}
    fp = r.cluster.fingerprint
    out = {k: v for k, v in (("cni", fp.cni), ("cni_version", fp.cni_version), ("kube_proxy", fp.kube_proxy),
                             ("routing", fp.routing), ("ipam", fp.ipam), ("source", fp.source),
                             ("scenario", fp.scenario)) if v}
    if fp.tuning:
        out["tuning"] = ",".join(fp.tuning)
    return out


# ---- eBPF ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MapFill:
    name: str
    type: str
    entries: float | None
    max_entries: float | None

    @property
    def fill(self) -> float | None:
        if self.entries is None or not self.max_entries:
            return None
        return self.entries / self.max_entries


def bpf_maps(us: Mapping[str, Unit]) -> list[MapFill]:
    r = _findings(us, "bpf")
    if r is None:
        return []
    return [MapFill(m.name or "?", m.type, float(m.entries) if m.HasField("entries") else None,
                    float(m.max_entries)) for m in r.bpf.maps if not m.error]


def worst_map_fill(us: Mapping[str, Unit]) -> float | None:
    """The fullest of Cilium's maps."""
    fills = [m.fill for m in bpf_maps(us) if m.name.startswith("cilium") and m.fill is not None]
    return max(fills) if fills else None


# ---- NIC / XDP ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Iface:
    name: str
    driver: str
    mtu: str
    speed: str
    xdp: str          # native | generic | ? and the attached mode if any
    offloads: str


def _iface(r: cap.NicInterface) -> Iface:
    driver = r.driver or r.kind
    xdp = "?" if not r.HasField("xdp_native") else "native" if r.xdp_native else "generic"
    if r.xdp_mode not in ("", "none"):
        xdp += f" ({r.xdp_mode})"
    if r.virtual or driver in VIRTUAL_DRIVERS:
        speed = "virtual"
    else:
        speed = f"{r.speed_mbps} Mb/s" if r.HasField("speed_mbps") else "unknown"
    offs = " ".join(f"{k}{'+' if v else '-'}" for k, v in sorted(r.offloads.items())[:4])
    return Iface(r.name, driver or "-", str(r.mtu or "-"), speed, xdp, offs)


def interfaces(us: Mapping[str, Unit]) -> list[Iface]:
    r = _findings(us, "nic")
    if r is None:
        return []
    out = [_iface(i) for i in r.nic.interfaces]
    out.sort(key=lambda i: (i.name != "eth0", i.name))
    return out


def native_xdp(us: Mapping[str, Unit]) -> bool | None:
    ifs = [i for i in interfaces(us) if i.driver not in VIRTUAL_DRIVERS or i.driver == "veth"]
    known = [i.xdp.startswith("native") for i in ifs if not i.xdp.startswith("?")]
    return any(known) if known else None


# ---- tracers ------------------------------------------------------------------------------------
def tracer(us: Mapping[str, Unit], name: str) -> cap.TracerReadiness | None:
    """Whether the named tracer could run on the node, as its ``tracers`` unit found."""
    r = _findings(us, "tracers")
    return next((t for t in r.tracers.tracers if t.name == name), None) if r is not None else None


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


# ---- tracer: connect latency ---------------------------------------------------------------------
BUCKET = "tcp_connect_latency_us_bucket{le="


def connect_histogram(figures: Mapping[str, float]) -> tuple[list[tuple[str, float]], dict[str, float]] | None:
    """Per-bucket counts (label, n) and summary figures from the tcpconnlat tracer's cumulative series."""
    cum: list[tuple[float, str, float]] = []
    for key, n in figures.items():
        if key.startswith(BUCKET):
            le = key[len(BUCKET):].rstrip("}").strip('"')
            bound = float("inf") if le in ("+Inf", "inf") else _float(le)
            if bound is not None:
                cum.append((bound, le, float(n)))
    if not cum:
        return None
    cum.sort()
    buckets, prev = [], 0.0
    for _bound, le, n in cum:
        if n - prev > 0:
            buckets.append((f"≤ {le} µs", n - prev))
        prev = max(prev, n)
    summary: dict[str, float] = {}
    for label, key in (("connects", "tcp_connect_latency_us_count"), ("failures", "tcp_connect_failures_total"),
                       ("p50_us", "tcp_connect_latency_us{quantile=0.5}"),
                       ("p99_us", "tcp_connect_latency_us{quantile=0.99}")):
        if key in figures:
            summary[label] = figures[key]
    return buckets, summary
