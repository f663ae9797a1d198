"""Node facts read out of capability reports, tolerant of missing or partial inspection units.

Each inspection unit ships its findings as ``detail_json``; the shapes evolve with the units, so
every accessor here tries the known spellings and answers ``None`` when the fact is not there.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

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


def dig(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if isinstance(obj, Mapping) and part in obj:
            obj = obj[part]
        else:
            return None
    return obj


def first(obj: Any, *paths: str) -> Any:
    for p in paths:
        v = dig(obj, p)
        if v is not None:
            return v
    return None


@dataclass(frozen=True)
class Unit:
    name: str
    ok: bool
    available: bool
    error: str
    duration: float
    detail: dict[str, Any]

    @property
    def state(self) -> str:
        if not self.available:
            return "unavailable"
        return "ok" if self.ok else "error"


def units(report: common_pb2.CapabilityReport) -> dict[str, Unit]:
    out: dict[str, Unit] = {}
    for u in report.units:
        try:
            detail = json.loads(u.detail_json) if u.detail_json else {}
        except ValueError:
            detail = {"_unparsed": u.detail_json[:200]}
        if not isinstance(detail, dict):
            detail = {"value": detail}
        out[u.name] = Unit(u.name, u.ok, u.available, u.error, u.duration_seconds, detail)
    return out


def find_unit(us: Mapping[str, Unit], *names: str) -> Unit | None:
    for n in names:
        if n in us:
            return us[n]
    for n in names:  # "tracer.tcpconnlat", "tracers/tcpconnlat" …
        for key, u in us.items():
            if key.endswith(n) or n in key:
                return u
    return None


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, int | float):
        return float(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


# ---- iptables / nftables ----------------------------------------------------------------------
BACKENDS = ("iptables-nft", "iptables-legacy")


def _ipt(us: Mapping[str, Unit]) -> Unit | None:
    u = find_unit(us, "iptables", "nft", "netfilter")
    return u if u is not None and u.ok else None


def nat_rules(us: Mapping[str, Unit]) -> float | None:
    """NAT rules of the backend kube-proxy uses (else the biggest NAT table seen)."""
    u = _ipt(us)
    if u is None:
        return None
    v = _num(first(u.detail, "kube_proxy.nat_rules", "nat_rules"))
    if v is not None:
        return v
    found = [_num(dig(u.detail, f"{b}.tables.nat.rules")) for b in BACKENDS]
    nums = [x for x in found if x is not None]
    if nums:
        return max(nums)
    return 0.0 if any(isinstance(u.detail.get(b), Mapping) for b in BACKENDS) else None


def kube_proxy_mode(us: Mapping[str, Unit]) -> str | None:
    u = _ipt(us)
    if u is None:
        return None
    v = first(u.detail, "kube_proxy.mode", "kube_proxy_mode", "mode")
    return str(v) if v is not None else None


def iptables_census(us: Mapping[str, Unit]) -> list[tuple[str, str, float]]:
    """(backend table, chain, rules) rows, biggest first, over iptables-nft, -legacy and native nft."""
    u = _ipt(us)
    if u is None:
        return []
    rows: list[tuple[str, str, float]] = []
    for backend in (*BACKENDS, "nft"):
        tables = dig(u.detail, f"{backend}.tables")
        if not isinstance(tables, Mapping):
            continue
        short = {"iptables-nft": "nft", "iptables-legacy": "legacy", "nft": "native"}[backend]
        for tname, t in tables.items():
            if not isinstance(t, Mapping):
                continue
            chains = t.get("chains") if isinstance(t.get("chains"), Mapping) else t.get("rules_by_chain")
            if isinstance(chains, Mapping):
                for cname, n in chains.items():
                    if (v := _num(n)) is not None and v > 0:
                        rows.append((f"{short} {tname}", str(cname), v))
    rows.sort(key=lambda r: (-r[2], r[0], r[1]))
    return rows


def fingerprint(us: Mapping[str, Unit]) -> dict[str, str]:
    """The node's own view of the cluster fingerprint (the ``cluster`` unit), as strings."""
    u = find_unit(us, "cluster")
    fp = dig(u.detail, "fingerprint") if u is not None and u.ok else None
    if not isinstance(fp, Mapping):
        return {}
    out = {k: str(v) for k, v in fp.items() if isinstance(v, str | int | float) and v != ""}
    tuning = fp.get("tuning")
    if isinstance(tuning, list) and tuning:
        out["tuning"] = ",".join(map(str, tuning))
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
    u = find_unit(us, "bpf", "ebpf")
    if u is None or not u.ok:
        return []
    maps = first(u.detail, "maps")
    out = []
    if isinstance(maps, list):
        for m in maps:
            if not isinstance(m, Mapping):
                continue
            out.append(MapFill(str(m.get("name", "?")), str(m.get("type", "")),
                               _num(first(m, "entries", "live_entries", "count")),
                               _num(m.get("max_entries"))))
    return out


def worst_map_fill(us: Mapping[str, Unit]) -> float | None:
    u = find_unit(us, "bpf", "ebpf")
    if u is not None and u.ok:
        v = _num(first(u.detail, "cilium.worst_fill", "worst_fill", "cilium_worst_fill"))
        if v is not None:
            return v
    fills = [m.fill for m in bpf_maps(us) if m.name.startswith("cilium") and m.fill is not None]
    return max(fills) if fills else None


# ---- NIC / XDP ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Iface:
    name: str
    driver: str
    mtu: str
    speed: str
    xdp: str          # native | generic | none/? and the attached mode if any
    offloads: str


def interfaces(us: Mapping[str, Unit]) -> list[Iface]:
    u = find_unit(us, "nic", "interfaces")
    if u is None or not u.ok:
        return []
    raw = first(u.detail, "interfaces", "ifaces", "links")
    items: list[tuple[str, Mapping[str, Any]]] = []
    if isinstance(raw, Mapping):
        items = [(str(k), v) for k, v in raw.items() if isinstance(v, Mapping)]
    elif isinstance(raw, list):
        items = [(str(v.get("name", v.get("ifname", "?"))), v) for v in raw if isinstance(v, Mapping)]
    out = []
    for name, d in items:
        driver = str(first(d, "driver", "driver.name") or d.get("kind") or "")
        native = first(d, "xdp_native", "native_xdp", "xdp.native", "xdp_features.native")
        attached = first(d, "xdp_mode", "xdp.mode", "xdp.attached")
        attached = None if attached in ("none", "", None) else attached
        xdp = "native" if native is True else "generic" if native is False else "?"
        if attached:
            xdp += f" ({attached})"
        speed = first(d, "speed", "speed_mbps")
        if driver in VIRTUAL_DRIVERS and driver:
            speed_s = "virtual"
        else:
            speed_s = f"{speed} Mb/s" if isinstance(speed, int | float) else str(speed or "-")
        offl = first(d, "offloads", "features")
        offs = ""
        if isinstance(offl, Mapping):
            offs = " ".join(f"{k}{'+' if v else '-'}" for k, v in list(offl.items())[:4])
        out.append(Iface(name, driver or "-", str(first(d, "mtu") or "-"), speed_s, xdp, offs))
    out.sort(key=lambda i: (i.name != "eth0", i.name))
    return out


def native_xdp(us: Mapping[str, Unit]) -> bool | None:
    u = find_unit(us, "nic", "interfaces")
    if u is None or not u.ok:
        return None
    v = first(u.detail, "native_xdp", "summary.native_xdp")
    if isinstance(v, bool):
        return v
    ifs = [i for i in interfaces(us) if i.driver not in VIRTUAL_DRIVERS or i.driver == "veth"]
    known = [i.xdp.startswith("native") for i in ifs if not i.xdp.startswith("?")]
    return any(known) if known else None


# ---- tracer: connect latency ---------------------------------------------------------------------
BUCKET = "tcp_connect_latency_us_bucket{le="


def connect_histogram(figures: Mapping[str, float]) -> tuple[list[tuple[str, float]], dict[str, float]] | None:
    """Per-bucket counts (label, n) and summary figures from the tcpconnlat tracer's cumulative series."""
    cum: list[tuple[float, str, float]] = []
    for key, n in figures.items():
        if key.startswith(BUCKET):
            le = key[len(BUCKET):].rstrip("}").strip('"')
            bound = float("inf") if le in ("+Inf", "inf") else _num(le)
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
