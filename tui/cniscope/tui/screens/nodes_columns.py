"""The columns of the Nodes table: label, width, how a cell is drawn and how a row sorts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rich.text import Text

from cniscope.api.v1 import cluster_pb2
from cniscope.core.render import STATUS
from cniscope.tui import facts
from cniscope.tui.cluster_model import ClusterModel, cni_total

STATUS_STYLE = {1: "green", 2: "yellow", 3: "red"}
STATUS_ORDER = {3: 0, 2: 1, 0: 2, 1: 3}   # worst first when sorting by status
SPARK_W = 5

Cell = str | Text


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    width: int
    cell: Callable[[ClusterModel, cluster_pb2.NodeState], Cell]
    sort: Callable[[ClusterModel, cluster_pb2.NodeState], float | str]
    live: bool = False   # changes with every sample batch
    right: bool = False  # figures: the header sits right, over right-aligned values


def _num(v: float | None) -> float:
    return v if v is not None else float("-inf")


def _spark(model: ClusterModel, node: str, series: str, value: float | None, fmt: str) -> Cell:
    if value is None:
        return Text("-", style="dim", justify="right")
    hist = model.history.get(node, {}).get(series, ())
    t = Text(format(value, fmt).rjust(5), no_wrap=True)
    t.append(" " + facts.sparkline(hist, SPARK_W), style="cyan")
    return t


def _cni_cpu(st: cluster_pb2.NodeState) -> float | None:
    return cni_total(st.figures, "cni_cpu_millicores")


def _cni_mib(st: cluster_pb2.NodeState) -> float | None:
    v = cni_total(st.figures, "cni_rss_bytes")
    return v / 2**20 if v is not None else None


def _agent_cpu(st: cluster_pb2.NodeState) -> float | None:
    return st.figures.get("agent_cpu_millicores")


def _status(m: ClusterModel, st: cluster_pb2.NodeState) -> Cell:
    return Text(STATUS.get(st.status, "?"), style=STATUS_STYLE.get(st.status, ""))


def _opt(v: float | None, fmt: str) -> Cell:
    return Text(format(v, fmt), justify="right") if v is not None else Text("-", style="dim", justify="right")


def _rtt(m: ClusterModel, st: cluster_pb2.NodeState) -> Cell:
    v = m.rtt_p50_to_peers(st.node)
    if v is None:
        return Text("-", style="dim", justify="right")
    return Text(f"{v:.0f} µs" if v < 10_000 else f"{v / 1000:.1f} ms", justify="right")


def _xdp(m: ClusterModel, st: cluster_pb2.NodeState) -> Cell:
    v = facts.native_xdp(m.units(st.node))
    return Text("?", style="dim") if v is None else Text("yes", style="green") if v else Text("no")


def _skew(m: ClusterModel, st: cluster_pb2.NodeState) -> Cell:
    ms = st.clock_skew_ms
    if st.clock_skewed:
        return Text(f"⚠{ms:+.0f}ms", style="bold yellow", justify="right")
    return Text(f"{ms:+.0f}ms", style="dim", justify="right")


def _drops(m: ClusterModel, st: cluster_pb2.NodeState) -> Cell:
    n = st.spool_dropped
    return Text(str(n), style="bold red" if n else "dim", justify="right")


def _fill(m: ClusterModel, st: cluster_pb2.NodeState) -> Cell:
    f = facts.worst_map_fill(m.units(st.node))
    if f is None:
        return Text("-", style="dim", justify="right")
    return Text(f"{f * 100:.0f}%", style="red" if f >= 0.8 else "yellow" if f >= 0.5 else "", justify="right")


COLUMNS: tuple[Column, ...] = (
    Column("node", "NODE", 10, lambda m, st: st.node, lambda m, st: st.node),
    Column("status", "STATUS", 9, _status, lambda m, st: STATUS_ORDER.get(st.status, 2)),
    Column("cni_cpu", "CNI CPU m", 11,
           lambda m, st: _spark(m, st.node, "cni_cpu", _cni_cpu(st), ".1f"),
           lambda m, st: _num(_cni_cpu(st)), live=True),
    Column("cni_rss", "CNI MiB", 11,
           lambda m, st: _spark(m, st.node, "cni_rss", _cni_mib(st), ".0f"),
           lambda m, st: _num(_cni_mib(st)), live=True),
    Column("agent_cpu", "AGENT m", 11,
           lambda m, st: _spark(m, st.node, "agent_cpu", _agent_cpu(st), ".1f"),
           lambda m, st: _num(_agent_cpu(st)), live=True),
    Column("nat", "NAT", 6, lambda m, st: _opt(facts.nat_rules(m.units(st.node)), ".0f"),
           lambda m, st: _num(facts.nat_rules(m.units(st.node))), right=True),
    Column("proxy", "PROXY", 8, lambda m, st: facts.kube_proxy_mode(m.units(st.node)) or "-",
           lambda m, st: facts.kube_proxy_mode(m.units(st.node)) or ""),
    Column("fill", "MAP%", 4, _fill, lambda m, st: _num(facts.worst_map_fill(m.units(st.node))), right=True),
    Column("xdp", "XDP", 3, _xdp, lambda m, st: str(facts.native_xdp(m.units(st.node)))),
    Column("rtt", "RTT p50", 8, _rtt, lambda m, st: _num(m.rtt_p50_to_peers(st.node)), right=True),
    Column("drops", "DROPS", 5, _drops, lambda m, st: float(st.spool_dropped), live=True, right=True),
    Column("skew", "SKEW", 7, _skew, lambda m, st: abs(st.clock_skew_ms), live=True, right=True),
)
BY_KEY = {c.key: c for c in COLUMNS}
