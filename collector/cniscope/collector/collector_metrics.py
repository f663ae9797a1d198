"""The collector's Prometheus ``/metrics``: every node's latest samples (exported generically, one gauge
family per sample name, in base units), node status, latest probe results, spool and ingest counters,
and each node's inspection units and census (see :mod:`cniscope.core.capability_metrics`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

from cniscope.collector.state import ClusterState
from cniscope.core.capability_metrics import capability_families
from cniscope.core.metrics_catalog import COLLECTOR_COUNTERS, NODE_FAMILIES
from cniscope.core.metricshttp import gauge_families, metric_name


@dataclass
class IngestCounters:
    batches: int = 0          # committed (fresh) batches
    duplicates: int = 0       # resent batches already durable
    refused: int = 0          # hostile or broken messages refused with a status
    samples: int = 0
    acks: int = 0             # ack messages written (acks are cumulative: one may cover many batches)
    commits: int = 0          # store transactions that committed batches (group commit: many per one)


class CollectorMetrics:
    def __init__(self, state: ClusterState, counters: IngestCounters) -> None:
        self.state = state
        self.counters = counters
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def start(self) -> None:
        """Nothing to follow: the exposition reads ClusterState when scraped."""

    async def stop(self) -> None:
        return None

    def collect(self) -> Iterator[Any]:
        st = self.state
        st.settle()
        fams = {f.name: GaugeMetricFamily(f.name, f.help, labels=list(f.labels)) for f in NODE_FAMILIES}
        for name, ns in sorted(st.nodes.items()):
            for n, value in (("cniscope_node_connected", 1.0 if name in st.sessions else 0.0),
                             ("cniscope_node_status", float(ns.status)),
                             ("cniscope_node_last_seen_timestamp_seconds", ns.last_seen_unix_nano / 1e9),
                             ("cniscope_node_spool_dropped", float(ns.spool_dropped)),
                             ("cniscope_node_clock_skew_seconds", ns.clock_skew_ms / 1e3),
                             ("cniscope_node_clock_skewed", 1.0 if ns.clock_skewed else 0.0),
                             ("cniscope_node_reconnects", float(ns.reconnects)),
                             ("cniscope_node_last_seq", float(ns.last_seq))):
                fams[n].add_metric([name], value)
        yield from fams.values()
        yield from capability_families((name, ns.capabilities) for name, ns in sorted(st.nodes.items()))
        rows = [(s.name, {**dict(s.labels), "node": node}, s.value)
                for node, series in sorted(st.latest.items()) for s in series.values()]
        yield from gauge_families(rows, "latest value reported by the node")
        probe_rows = []
        for (kind, src, dst, path), r in sorted(st.latest_results.items()):
            base = {"kind": kind, "source": src, "target": dst, "path": path}
            probe_rows.append(("probe_ok", base, 1.0 if r.ok else 0.0))
            for fig, val in r.figures.items():
                probe_rows.append((metric_name(f"probe_{kind}_{fig}", ""), base, val))
        yield from gauge_families(probe_rows, "latest probe result")
        c = self.counters
        for n, v, doc in COLLECTOR_COUNTERS:
            yield CounterMetricFamily(n, doc, value=getattr(c, v))
