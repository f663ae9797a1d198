"""The agent's own Prometheus ``/metrics``, so a fleet can be watched without any collector: every
latest sample (one gauge family per sample name), latest probe results, spool depth and bytes, what
the spool bound dropped, reconnects, and each inspection unit's duration and success."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

from cniscope.core.metricshttp import gauge_families, metric_name

if TYPE_CHECKING:
    from cniscope.agent.app import Agent


class AgentMetrics:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def collect(self) -> Iterator[Any]:
        a = self.agent
        node = a.cfg.node
        for fam, val in (
            (GaugeMetricFamily("cniscope_agent_spool_batches", "un-acknowledged batches held", labels=["node"]),
             a.spool.depth),
            (GaugeMetricFamily("cniscope_agent_spool_bytes", "bytes of un-acknowledged batches held", labels=["node"]),
             a.spool.bytes),
            (CounterMetricFamily("cniscope_agent_spool_dropped", "batches the spool bound forced out", labels=["node"]),
             a.spool.dropped),
            (CounterMetricFamily("cniscope_agent_reconnects", "reconnects to the collector", labels=["node"]),
             a.reconnects),
            (GaugeMetricFamily("cniscope_agent_connected", "1 while the collector stream is up", labels=["node"]),
             1 if a.connected.is_set() else 0),
            (GaugeMetricFamily("cniscope_agent_last_seq", "seq of the last sealed batch", labels=["node"]), a.seq),
        ):
            fam.add_metric([node], float(val))
            yield fam
        yield from gauge_families([(s.name, {**dict(s.labels), "node": node}, s.value) for s in a.last_samples],
                                  "latest value sampled on this node")
        rows = []
        for (kind, target, path), r in sorted(a.last_results.items()):
            base = {"node": node, "kind": kind, "target": target, "path": path}
            rows.append(("probe_ok", base, 1.0 if r.ok else 0.0))
            rows.extend((metric_name(f"probe_{kind}_{fig}", ""), base, v) for fig, v in r.figures.items())
        yield from gauge_families(rows, "latest probe result from this node")
        if a.capabilities is not None:
            dur = GaugeMetricFamily("cniscope_unit_duration_seconds", "inspection unit duration", labels=["node", "unit"])
            ok = GaugeMetricFamily("cniscope_unit_success", "1 when the unit succeeded", labels=["node", "unit"])
            av = GaugeMetricFamily("cniscope_unit_available", "1 when the unit applies here", labels=["node", "unit"])
            for u in a.capabilities.units:
                dur.add_metric([node, u.name], u.duration_seconds)
                ok.add_metric([node, u.name], 1.0 if u.ok else 0.0)
                av.add_metric([node, u.name], 1.0 if u.available else 0.0)
            yield from (dur, ok, av)
