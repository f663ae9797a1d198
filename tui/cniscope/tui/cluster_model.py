"""What the TUI knows about the cluster, kept apart from how it is drawn.

Events from the collector are applied here (cheap dict work, no widgets); screens read the model on
their own refresh tick and redraw only what changed since their last look (``seq`` counters).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

from cniscope.api.v1 import cluster_pb2, common_pb2
from cniscope.tui import facts

HISTORY = 24          # points kept per node series (sparklines)
PAIR_HISTORY = 50     # results kept per (kind, path, source, target)
MAX_PROBES = 500
MAX_LOG = 5000
THROUGHPUT_KEYS = ("received_gbps", "achieved_gbps", "sent_gbps")

PairKey = tuple[str, str, str, str]  # kind, path, source, target
SERIES = {"agent_cpu_millicores": "agent_cpu", "agent_rss_bytes": "agent_rss",
          "cni_cpu_millicores": "cni_cpu", "cni_rss_bytes": "cni_rss"}  # figure → sparkline series


def cni_total(figures: dict[str, float] | object, name: str) -> float | None:
    """Sum of ``name{process=…}`` series (every CNI process on the node), None when there is none."""
    total, seen = 0.0, False
    for key, value in getattr(figures, "items", lambda: [])():
        if key == name or key.startswith(name + "{"):
            total += value
            seen = True
    return total if seen else None


@dataclass
class ProbeEntry:
    probe_id: str
    kind: str
    source: str
    target: str
    path: str
    state: str = "running"          # running | ok | failed
    fraction: float = 0.0
    message: str = ""
    started_ns: int = 0
    result: common_pb2.ProbeResult | None = None
    mine: bool = False              # fired from this TUI
    uid: int = 0                    # stable row key for screens

    @property
    def finished(self) -> bool:
        return self.state != "running"


@dataclass
class LogEntry:
    time_ns: int
    level: str
    node: str
    message: str


@dataclass
class ClusterModel:
    nodes: dict[str, cluster_pb2.NodeState] = field(default_factory=dict)
    node_seq: dict[str, int] = field(default_factory=dict)
    history: dict[str, dict[str, deque[float]]] = field(default_factory=dict)
    pairs: dict[PairKey, deque[common_pb2.ProbeResult]] = field(default_factory=dict)
    probes: OrderedDict[str, ProbeEntry] = field(default_factory=OrderedDict)
    log: deque[LogEntry] = field(default_factory=lambda: deque(maxlen=MAX_LOG))
    seq: int = 0                    # bumped on every change
    probe_seq: int = 0
    pair_seq: int = 0
    log_seq: int = 0
    log_total: int = 0              # entries ever added (the deque forgets the oldest)
    connected: bool = False
    connection_detail: str = "connecting…"
    collector_version: str = ""
    collector_address: str = ""
    snapshot_done: bool = False
    storage: cluster_pb2.StorageStatus | None = None   # the collector's database, once it said
    _local_ids: int = 0
    _units: dict[str, tuple[tuple[int, int], dict[str, facts.Unit]]] = field(default_factory=dict)

    # ---- events -------------------------------------------------------------------------------
    def apply(self, ev: cluster_pb2.ClusterEvent) -> None:
        which = ev.WhichOneof("body")
        if which == "node":
            self.upsert_node(ev.node, owned=True)  # an event is applied once, then dropped
        elif which == "probe_result":
            self.add_result(ev.probe_result)
        elif which == "probe_progress":
            self.progress(ev.probe_progress)
        elif which == "log":
            self.add_log(ev.log.time_unix_nano, ev.log.level or "info", ev.log.node, ev.log.message)
        elif which == "storage":
            self.storage = ev.storage
            self.seq += 1
        elif which == "snapshot_done":
            self.snapshot_done = True
            self.collector_version = ev.snapshot_done.collector_version
            self.collector_address = ev.snapshot_done.collector_address
            self.set_connection(True, "")

    def set_connection(self, up: bool, detail: str) -> None:
        if (up, detail) != (self.connected, self.connection_detail):
            self.connected, self.connection_detail = up, detail
            self.seq += 1

    def upsert_node(self, st: cluster_pb2.NodeState, owned: bool = False) -> None:
        """Store a node's state; ``owned``: the caller hands ``st`` over and never touches it again."""
        copy = st
        if not owned:
            copy = cluster_pb2.NodeState()
            copy.CopyFrom(st)
        self.nodes[st.node] = copy
        self.seq += 1
        self.node_seq[st.node] = self.seq
        points: dict[str, float] = {}
        for key, value in copy.figures.items():  # one pass: every CNI process adds to its node's total
            name = SERIES.get(key.partition("{")[0])
            if name is not None and (name.startswith("cni_") or "{" not in key):
                points[name] = points.get(name, 0.0) + value
        series = self.history.setdefault(st.node, {})
        for name, value in points.items():
            hist = series.get(name)
            if hist is None:
                hist = series[name] = deque(maxlen=HISTORY)
            hist.append(value)

    def add_result(self, r: common_pb2.ProbeResult) -> None:
        key = (r.kind, r.path or "host", r.source_node, r.target_node or r.target_address)
        hist = self.pairs.setdefault(key, deque(maxlen=PAIR_HISTORY))
        if not any(r.probe_id and old.probe_id == r.probe_id for old in hist):
            hist.append(r)
        pid = r.probe_id or self._new_id()
        entry = self.probes.get(pid)
        if entry is None:
            entry = self._new_probe(pid, r.kind, r.source_node, r.target_node or r.target_address,
                                    r.path or "host", r.started_unix_nano)
        entry.state = "ok" if r.ok else "failed"
        entry.fraction = 1.0
        entry.message = "" if r.ok else r.error
        entry.result = r
        self.seq += 1
        self.pair_seq = self.probe_seq = self.seq

    def progress(self, p: common_pb2.ProbeProgress) -> None:
        entry = self.probes.get(p.probe_id)
        if entry is not None and not entry.finished:
            entry.fraction, entry.message = p.fraction, p.message
            self.seq += 1
            self.probe_seq = self.seq

    def add_log(self, time_ns: int, level: str, node: str, message: str) -> None:
        self.log.append(LogEntry(time_ns, level, node, message))
        self.log_total += 1
        self.seq += 1
        self.log_seq = self.seq

    # ---- probes fired here ---------------------------------------------------------------------
    def _new_id(self) -> str:
        self._local_ids += 1
        return f"local-{self._local_ids}"

    def _new_probe(self, pid: str, kind: str, src: str, dst: str, path: str, started: int) -> ProbeEntry:
        self._local_ids += 1
        entry = ProbeEntry(pid, kind, src, dst, path, started_ns=started, uid=self._local_ids)
        self.probes[pid] = entry
        while len(self.probes) > MAX_PROBES:
            self.probes.popitem(last=False)
        return entry

    def start_probe(self, req: common_pb2.ProbeRequest, now_ns: int) -> ProbeEntry:
        entry = self._new_probe(req.probe_id or self._new_id(), req.kind, req.source_node,
                                req.target_node or req.target_address, req.path or "host", now_ns)
        entry.mine = True
        self.seq += 1
        self.probe_seq = self.seq
        return entry

    def adopt_probe_id(self, entry: ProbeEntry, probe_id: str) -> None:
        """File ``entry`` under the id the collector gave its probe, so the Watch stream's events
        for it update this entry instead of starting another."""
        if probe_id and probe_id != entry.probe_id and probe_id not in self.probes:
            self.probes.pop(entry.probe_id, None)
            entry.probe_id = probe_id
            self.probes[probe_id] = entry

    def update_probe(self, entry: ProbeEntry, fraction: float, message: str) -> None:
        entry.fraction, entry.message = fraction, message
        self.seq += 1
        self.probe_seq = self.seq

    def finish_probe(self, entry: ProbeEntry, r: common_pb2.ProbeResult | None, error: str = "") -> None:
        if r is not None:
            if r.probe_id != entry.probe_id:  # a replayed or foreign result: file it under this entry
                fixed = common_pb2.ProbeResult()
                fixed.CopyFrom(r)
                fixed.probe_id = entry.probe_id
                r = fixed
            self.add_result(r)  # same probe_id (chosen by the TUI), so the same entry
        elif not entry.finished:
            entry.state, entry.fraction, entry.message = "failed", 1.0, error
            self.seq += 1
            self.probe_seq = self.seq

    # ---- queries ------------------------------------------------------------------------------
    def latest(self, kind: str, path: str, src: str, dst: str) -> common_pb2.ProbeResult | None:
        hist = self.pairs.get((kind, path, src, dst))
        return hist[-1] if hist else None

    def rtt_p50_to_peers(self, node: str) -> float | None:
        """Median of the latest successful RTT p50 from ``node`` to each peer (any path)."""
        values = []
        for (kind, _path, src, _dst), hist in self.pairs.items():
            if kind == "rtt" and src == node and hist and hist[-1].ok and "p50_us" in hist[-1].figures:
                values.append(hist[-1].figures["p50_us"])
        if not values:
            return None
        values.sort()
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2

    def units(self, node: str) -> dict[str, facts.Unit]:
        """Parsed inspection units of a node, parsed once per capability report."""
        st = self.nodes.get(node)
        if st is None:
            return {}
        key = (st.capabilities.time_unix_nano, len(st.capabilities.units))
        hit = self._units.get(node)
        if hit is None or hit[0] != key:
            hit = (key, facts.units(st.capabilities))
            self._units[node] = hit
        return hit[1]

    def counts(self) -> tuple[int, int]:
        up = sum(1 for st in self.nodes.values() if st.status == cluster_pb2.NODE_STATUS_CONNECTED)
        return up, len(self.nodes)
