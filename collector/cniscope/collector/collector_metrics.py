"""The collector's Prometheus ``/metrics``: every node's latest samples (exported generically, one gauge
family per sample name), node status, latest probe results, spool and ingest counters, and each
inspection unit's duration and success."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

from cniscope.collector.state import ClusterState
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
        connected = GaugeMetricFamily("cniscope_node_connected", "1 when the node's agent is connected", labels=["node"])
        status = GaugeMetricFamily("cniscope_node_status", "node status (1 connected, 2 stale, 3 gone)", labels=["node"])
        dropped = GaugeMetricFamily("cniscope_node_spool_dropped", "batches the agent's spool bound forced out", labels=["node"])
        skew = GaugeMetricFamily("cniscope_node_clock_skew_ms", "agent clock minus collector clock", labels=["node"])
        skewed = GaugeMetricFamily("cniscope_node_clock_skewed", "1 when the clock is off by more than the limit", labels=["node"])
        reconnects = GaugeMetricFamily("cniscope_node_reconnects", "reconnects seen by the collector", labels=["node"])
        last_seq = GaugeMetricFamily("cniscope_node_last_seq", "highest batch seq of the current boot", labels=["node"])
        unit_dur = GaugeMetricFamily("cniscope_unit_duration_seconds", "inspection unit duration", labels=["node", "unit"])
        unit_ok = GaugeMetricFamily("cniscope_unit_success", "1 when the unit succeeded", labels=["node", "unit"])
        unit_av = GaugeMetricFamily("cniscope_unit_available", "1 when the unit applies on this node", labels=["node", "unit"])
        for name, ns in sorted(st.nodes.items()):
            connected.add_metric([name], 1.0 if name in st.sessions else 0.0)
            status.add_metric([name], float(ns.status))
            dropped.add_metric([name], float(ns.spool_dropped))
            skew.add_metric([name], ns.clock_skew_ms)
            skewed.add_metric([name], 1.0 if ns.clock_skewed else 0.0)
            reconnects.add_metric([name], float(ns.reconnects))
            last_seq.add_metric([name], float(ns.last_seq))
            for u in ns.capabilities.units:
                unit_dur.add_metric([name, u.name], u.duration_seconds)
                unit_ok.add_metric([name, u.name], 1.0 if u.ok else 0.0)
                unit_av.add_metric([name, u.name], 1.0 if u.available else 0.0)
        yield from (connected, status, dropped, skew, skewed, reconnects, last_seq, unit_dur, unit_ok, unit_av)
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
        for n, v, doc in (("cniscope_collector_batches", c.batches, "batches committed"),
                          ("cniscope_collector_duplicate_batches", c.duplicates, "resent batches dropped as duplicates"),
                          ("cniscope_collector_refused_messages", c.refused, "agent messages refused"),
                          ("cniscope_collector_samples", c.samples, "samples committed"),
                          ("cniscope_collector_acks", c.acks, "ack messages sent (cumulative acks)"),
                          ("cniscope_collector_commits", c.commits, "store transactions committing batches")):
            yield CounterMetricFamily(n, doc, value=v)
