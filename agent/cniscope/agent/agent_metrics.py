"""The agent's own Prometheus ``/metrics``, so a fleet can be watched without any collector: every
latest sample (one gauge family per sample name, in base units), latest probe results, spool depth
and bytes, what the spool bound dropped, reconnects, and each inspection unit's duration and success
with the node's census (:mod:`cniscope.core.capability_metrics`).

The exporter reads an :class:`AgentStatus` at scrape time; it knows nothing else of the agent.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

from cniscope.agent.spool import Spool
from cniscope.api.v1 import common_pb2
from cniscope.core.capability_metrics import capability_families
from cniscope.core.metrics_catalog import AGENT_FAMILIES
from cniscope.core.metricshttp import gauge_families, metric_name


class AgentStatus(Protocol):
    """What a running agent shows its scraper."""

    @property
    def node(self) -> str: ...
    @property
    def spool(self) -> Spool: ...
    @property
    def reconnects(self) -> int: ...
    @property
    def connected(self) -> bool: ...
    @property
    def last_seq(self) -> int: ...
    @property
    def last_samples(self) -> Sequence[common_pb2.Sample]: ...
    @property
    def last_results(self) -> Mapping[tuple[str, str, str], common_pb2.ProbeResult]: ...  # (kind, target, path)
    @property
    def capabilities(self) -> common_pb2.CapabilityReport | None: ...


class AgentMetrics:
    def __init__(self, status: AgentStatus) -> None:
        self.status = status
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def collect(self) -> Iterator[Any]:
        a = self.status
        node = a.node
        values = {"cniscope_agent_spool_batches": a.spool.depth, "cniscope_agent_spool_bytes": a.spool.bytes,
                  "cniscope_agent_spool_dropped": a.spool.dropped,
                  "cniscope_agent_spool_refused": a.spool.refused, "cniscope_agent_reconnects": a.reconnects,
                  "cniscope_agent_connected": 1 if a.connected else 0, "cniscope_agent_last_seq": a.last_seq}
        for f in AGENT_FAMILIES:
            cls = CounterMetricFamily if f.type == "counter" else GaugeMetricFamily
            fam = cls(f.name, f.help, labels=list(f.labels))
            fam.add_metric([node], float(values[f.name]))
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
            yield from capability_families([(node, a.capabilities)])
