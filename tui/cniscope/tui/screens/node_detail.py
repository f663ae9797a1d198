"""Node detail: the capability report of one node, each section degrading when its unit is missing."""

from __future__ import annotations

from typing import ClassVar

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Static

from cniscope.api.v1 import cluster_pb2, common_pb2
from cniscope.core.render import STATUS, ago
from cniscope.tui import facts
from cniscope.tui.screens.screen_frame import CniscopeScreen
from cniscope.tui.widgets.bars import fill_bar

MARK = {common_pb2.READINESS_READY: ("✓", "green"), common_pb2.READINESS_NOT_READY: ("✗", "red"),
        common_pb2.READINESS_UNKNOWN: ("?", "yellow"), common_pb2.READINESS_UNSPECIFIED: ("?", "yellow")}
COLUMNS = (("overview", "units", "interfaces", "footprint", "connlat"), ("readiness", "maps", "iptables"))
TITLES = {"overview": "Node", "readiness": "Kernel readiness", "units": "Inspection units",
          "interfaces": "Interfaces", "maps": "BPF maps", "iptables": "iptables / nftables",
          "connlat": "TCP connect latency (tracer)", "footprint": "Footprint"}


def _missing(us: dict[str, facts.Unit], name: str) -> Text:
    u = facts.find_unit(us, name)
    if u is None:
        return Text(f"not reported: this agent has no {name!r} unit", style="dim")
    if not u.available:
        return Text(f"unavailable: {u.error}", style="yellow")
    if not u.ok:
        return Text(f"failed: {u.error}", style="red")
    return Text("nothing found", style="dim")


def _grid(*headers: str) -> Table:
    t = Table(box=None, show_edge=False, pad_edge=False, expand=True, header_style="bold dim")
    for h in headers:
        t.add_column(h, overflow="fold")
    return t


class NodeDetailScreen(CniscopeScreen):
    TITLE_TEXT = "Node"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("r", "rtt", "Probe from here"),
    ]

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node
        self.TITLE_TEXT = f"Node {node}"
        self._seen = -1

    def compose_body(self) -> ComposeResult:
        with VerticalScroll(id="detail"), Horizontal(id="detail-cols"):
            for keys in COLUMNS:
                with Vertical(classes="detail-col"):
                    for key in keys:
                        panel = Static(id=f"sec-{key}", classes="panel")
                        panel.border_title = TITLES[key]
                        yield panel

    def sync(self) -> None:
        seen = max(self.model.node_seq.get(self.node, 0), self.model.pair_seq)
        if seen == self._seen:
            return
        self._seen = seen
        st = self.model.nodes.get(self.node)
        if st is None:
            self.query_one("#sec-overview", Static).update(Text(f"{self.node}: no such node", style="red"))
            return
        us = self.model.units(self.node)
        render = {"overview": self._overview(st), "readiness": self._readiness(st),
                  "units": self._units(us), "interfaces": self._interfaces(us), "maps": self._maps(us),
                  "iptables": self._iptables(us), "connlat": self._connlat(us, st),
                  "footprint": self._footprint(st)}
        for key, renderable in render.items():
            self.query_one(f"#sec-{key}", Static).update(renderable)

    def _overview(self, st: cluster_pb2.NodeState) -> RenderableType:
        t = Table(box=None, show_header=False, pad_edge=False)
        t.add_column(min_width=24)
        t.add_column()
        status = Text(STATUS.get(st.status, "?"),
                      style={1: "green", 2: "yellow", 3: "red"}.get(st.status, ""))
        rows: list[tuple[str, str | Text]] = [
            ("status", status), ("host / pod IP", f"{st.host_ip} / {st.pod_ip or '-'}"),
            ("agent", st.agent_version), ("kernel", st.capabilities.kernel or "?"),
            ("boot id", st.boot_id[:12]), ("last seen", ago(st.last_seen_unix_nano, self.capp.now_ns())),
            ("reconnects / boots", f"{st.reconnects} / {st.boots}"),
            ("seq gaps / spool drops", f"{st.seq_gaps} / {st.spool_dropped}"),
            ("clock skew", Text(f"{st.clock_skew_ms:+.1f} ms" + ("  (above limit)" if st.clock_skewed else ""),
                                style="yellow" if st.clock_skewed else "")),
        ]
        rtt = self.model.rtt_p50_to_peers(st.node)
        rows.append(("RTT p50 to peers", f"{rtt:.0f} µs" if rtt is not None else "not measured (m: mesh)"))
        for k, v in rows:
            t.add_row(Text(k, style="dim"), v)
        return t

    def _readiness(self, st: cluster_pb2.NodeState) -> RenderableType:
        items = list(st.capabilities.items)
        if not items:
            return Text("no readiness items reported", style="dim")
        t = _grid("", "item", "why")
        t.columns[1].no_wrap = True
        t.columns[2].ratio = 1
        for it in sorted(items, key=lambda i: i.name):
            mark, style = MARK.get(it.state, ("?", "yellow"))
            t.add_row(Text(mark, style=f"bold {style}"), it.name, Text(it.reason, style="dim"))
        return t

    def _units(self, us: dict[str, facts.Unit]) -> RenderableType:
        if not us:
            return Text("no inspection units reported", style="dim")
        t = _grid("unit", "state", "time", "summary")
        for u in sorted(us.values(), key=lambda u: u.name):
            style = {"ok": "green", "unavailable": "yellow", "error": "red"}[u.state]
            t.add_row(u.name, Text(u.state, style=style), f"{u.duration * 1000:.0f} ms",
                      Text(u.summary or u.error, style="dim"))
        return t

    def _interfaces(self, us: dict[str, facts.Unit]) -> RenderableType:
        ifs = facts.interfaces(us)
        if not ifs:
            return _missing(us, "nic")
        t = _grid("iface", "driver", "mtu", "speed", "XDP", "offloads")
        for i in ifs:
            t.add_row(i.name, i.driver, i.mtu, i.speed, i.xdp, Text(i.offloads, style="dim"))
        return t

    def _maps(self, us: dict[str, facts.Unit]) -> RenderableType:
        maps = facts.bpf_maps(us)
        if not maps:
            return _missing(us, "bpf")
        maps.sort(key=lambda m: (-(m.fill or -1.0), m.name))
        t = _grid("map", "type", "entries", "fill")
        for m in maps[:20]:
            ent = f"{m.entries or 0:.0f}/{m.max_entries or 0:.0f}"
            t.add_row(m.name, Text(m.type, style="dim"), ent, fill_bar(m.fill, 10))
        if len(maps) > 20:
            t.add_row(Text(f"… {len(maps) - 20} more", style="dim"), "", "", "")
        return t

    def _iptables(self, us: dict[str, facts.Unit]) -> RenderableType:
        rows = facts.iptables_census(us)
        if not rows:
            return _missing(us, "iptables")
        t = _grid("table", "chain", "rules")
        nat, mode = facts.nat_rules(us), facts.kube_proxy_mode(us)
        t.add_row(Text("kube-proxy", style="bold"), mode or "?", f"NAT {nat:.0f}" if nat is not None else "")
        for table, chain, n in rows[:15]:
            t.add_row(table, chain, f"{n:.0f}")
        return t

    def _connlat(self, us: dict[str, facts.Unit], st: cluster_pb2.NodeState) -> RenderableType:
        h = facts.connect_histogram(st.figures)
        if h is None:
            t = facts.tracer(us, "tcpconnlat")
            if t is not None and not t.available:
                return Text(t.reason, style="yellow")
            return Text("no tracer samples: the tcpconnlat tracer is not running on this agent", style="dim")
        buckets, summary = h
        if not buckets:
            return Text("no connections seen yet", style="dim")
        peak = max(c for _, c in buckets) or 1.0
        out = Text()
        for label, count in buckets:
            out.append(f"{label:>16} ", style="dim")
            out.append("█" * max(1 if count else 0, int(count / peak * 30)), style="cyan")
            out.append(f" {count:.0f}\n")
        out.append("  ".join(f"{k} {v:.0f}" for k, v in summary.items()), style="bold")
        return out

    def _footprint(self, st: cluster_pb2.NodeState) -> RenderableType:
        figs = {k: v for k, v in st.figures.items() if ("cpu" in k or "rss" in k or "spool" in k)}
        if not figs:
            return Text("no footprint samples yet", style="dim")
        t = _grid("series", "value")
        for k in sorted(figs):
            v = figs[k]
            shown = f"{v / 2**20:.1f} MiB" if "_bytes" in k else f"{v:.1f} m" if "millicores" in k else f"{v:.0f}"
            t.add_row(k, shown)
        return t

    def action_rtt(self) -> None:
        self.capp.push_probe_form(source=self.node)
