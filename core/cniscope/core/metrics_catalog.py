"""Every Prometheus series family the agent and the collector expose, declared once: name (in base
units), type, labels, help and cardinality. The exporters take their fixed families and the help of
sampled ones from here, and ``METRICS.md`` is rendered from it (``python -m cniscope.core.metrics_catalog``).

Probe results are one family per kind and figure (``cniscope_probe_<kind>_<figure>``); a figure's unit
suffix becomes a base unit (``p99_us`` → ``p99_seconds``, see ``metric_units.BASE_UNITS``).
"""

from __future__ import annotations

from dataclasses import dataclass

from cniscope.core.capability_metrics import CENSUS_SERIES, MAX_FILL_MAPS, UNIT_SERIES
from cniscope.core.metric_units import base_unit
from cniscope.core.probekinds import KINDS

AGENT, COLLECTOR, BOTH = "agent", "collector", "agent, collector"
PAIRS = ("≤ mesh_fanout × 2 paths + ad-hoc probe targets per node and figure; the collector: the sum "
         "over nodes")


@dataclass(frozen=True)
class Family:
    name: str
    type: str                   # gauge | counter | histogram
    labels: tuple[str, ...]
    help: str
    cardinality: str            # series per node (the collector: per node it sees)
    endpoints: str = AGENT


AGENT_FAMILIES = (
    Family("cniscope_agent_spool_batches", "gauge", ("node",), "un-acknowledged batches held", "1"),
    Family("cniscope_agent_spool_bytes", "gauge", ("node",), "bytes of un-acknowledged batches held", "1"),
    Family("cniscope_agent_spool_dropped", "counter", ("node",), "batches the spool bound forced out", "1"),
    Family("cniscope_agent_spool_refused", "counter", ("node",),
           "batches the collector refused for good (dropped from the spool, not resent)", "1"),
    Family("cniscope_agent_reconnects", "counter", ("node",), "reconnects to the collector", "1"),
    Family("cniscope_agent_connected", "gauge", ("node",), "1 while the collector stream is up", "1"),
    Family("cniscope_agent_last_seq", "gauge", ("node",), "seq of the last sealed batch", "1"),
)
NODE_FAMILIES = (
    Family("cniscope_node_connected", "gauge", ("node",), "1 when the node's agent is connected", "1", COLLECTOR),
    Family("cniscope_node_status", "gauge", ("node",), "node status (1 connected, 2 stale, 3 gone)", "1", COLLECTOR),
    Family("cniscope_node_last_seen_timestamp_seconds", "gauge", ("node",),
           "when the collector last heard from the node's agent", "1", COLLECTOR),
    Family("cniscope_node_spool_dropped", "gauge", ("node",), "batches the agent's spool bound forced out", "1",
           COLLECTOR),
    Family("cniscope_node_clock_skew_seconds", "gauge", ("node",), "agent clock minus collector clock", "1",
           COLLECTOR),
    Family("cniscope_node_clock_skewed", "gauge", ("node",), "1 when the clock is off by more than the limit", "1",
           COLLECTOR),
    Family("cniscope_node_reconnects", "gauge", ("node",), "reconnects seen by the collector", "1", COLLECTOR),
    Family("cniscope_node_last_seq", "gauge", ("node",), "highest batch seq of the current boot", "1", COLLECTOR),
)
# (family, IngestCounters field, help): one series per collector
COLLECTOR_COUNTERS = (
    ("cniscope_collector_batches", "batches", "batches committed"),
    ("cniscope_collector_duplicate_batches", "duplicates", "resent batches dropped as duplicates"),
    ("cniscope_collector_refused_messages", "refused", "agent messages refused"),
    ("cniscope_collector_samples", "samples", "samples committed"),
    ("cniscope_collector_acks", "acks", "ack messages sent (cumulative acks)"),
    ("cniscope_collector_commits", "commits", "store transactions committing batches"),
)
# The collector's database and its size bound (one series per collector).
STORAGE_FAMILIES = (
    Family("cniscope_collector_db_bytes", "gauge", (), "the database on disk: file, WAL and shared memory",
           "1 per collector", COLLECTOR),
    Family("cniscope_collector_db_max_bytes", "gauge", (), "the database's size bound (max_db_bytes)",
           "1 per collector", COLLECTOR),
    Family("cniscope_collector_db_time_to_full_seconds", "gauge", (),
           "time until the database reaches its bound at the growth of the last 15 minutes (+Inf: not "
           "growing; 0: at the bound, the oldest samples are being pruned)", "1 per collector", COLLECTOR),
    Family("cniscope_collector_db_raw_sample_bytes", "gauge", (), "raw samples stored (as received and compressed)",
           "1 per collector", COLLECTOR),
    Family("cniscope_collector_db_protected_bytes", "gauge", (),
           "what size pruning never deletes: runs, probe results, capability reports, node records",
           "1 per collector", COLLECTOR),
    Family("cniscope_collector_db_pruned_samples", "counter", (),
           "raw samples turned into per-minute aggregates early to stay under the bound", "1 per collector",
           COLLECTOR),
    Family("cniscope_collector_db_pruned_aggregates", "counter", (),
           "per-minute aggregates deleted to stay under the bound", "1 per collector", COLLECTOR),
    Family("cniscope_collector_db_pruned_events", "counter", (), "log events deleted to stay under the bound",
           "1 per collector", COLLECTOR),
)
# What the agent's samplers and tracers send; the agent exposes its own, the collector every node's.
SAMPLED = (
    Family("cniscope_agent_cpu_cores", "gauge", ("node",), "the agent's own CPU use", "1", BOTH),
    Family("cniscope_agent_rss_bytes", "gauge", ("node",), "the agent's own resident memory", "1", BOTH),
    Family("cniscope_cni_processes", "gauge", ("node", "process"), "processes of each CNI agent found by name",
           "1 per CNI process name found (≤ 8)", BOTH),
    Family("cniscope_cni_cpu_cores", "gauge", ("node", "process"), "CPU of each CNI agent (all its processes)",
           "1 per CNI process name found (≤ 8)", BOTH),
    Family("cniscope_cni_rss_bytes", "gauge", ("node", "process"), "resident memory of each CNI agent",
           "1 per CNI process name found (≤ 8)", BOTH),
    Family("cniscope_cni_pss_bytes", "gauge", ("node", "process"), "proportional set size of each CNI agent",
           "1 per CNI process name found (≤ 8)", BOTH),
    Family("cniscope_cni_cgroup_cpu_cores", "gauge", ("node", "process", "cgroup"),
           "CPU of the CNI agent's container cgroup", "1 per CNI container", BOTH),
    Family("cniscope_cni_cgroup_memory_bytes", "gauge", ("node", "process", "cgroup"),
           "memory of the CNI agent's container cgroup", "1 per CNI container", BOTH),
    Family("cniscope_tcp_connect_latency_seconds", "histogram", ("node", "tracer", "le"),
           "TCP connect latency, SYN_SENT→ESTABLISHED (tracer tcpconnlat)", "1 per log2 bucket (≤ 27) + 2", BOTH),
    Family("cniscope_tcp_connect_failures", "counter", ("node", "tracer"),
           "TCP connects that failed (tracer tcpconnlat)", "1", BOTH),
    Family("cniscope_tcp_retransmits", "counter", ("node", "tracer", "state"),
           "TCP retransmits by socket state (tracer retrans)", "1 per TCP state seen (≤ 12)", BOTH),
    Family("cniscope_tcp_retransmits_all", "counter", ("node", "tracer"), "TCP retransmits (tracer retrans)", "1",
           BOTH),
    Family("cniscope_skb_drops", "counter", ("node", "tracer", "reason"),
           "packets the kernel dropped, by drop reason (tracer drops)", "1 per drop reason seen", BOTH),
    Family("cniscope_agent_spool_depth", "gauge", ("node",), "un-acknowledged batches, as the agent reported",
           "1", COLLECTOR),
    Family("cniscope_agent_spool_dropped", "gauge", ("node",), "spool drops, as the agent reported", "1",
           COLLECTOR),
    Family("cniscope_agent_reconnects", "gauge", ("node",), "reconnects, as the agent reported", "1", COLLECTOR),
    Family("cniscope_agent_clock_offset_seconds", "gauge", ("node",),
           "agent clock minus collector clock, measured over the Welcome round trip", "1", COLLECTOR),
    Family("cniscope_agent_clock_rtt_seconds", "gauge", ("node",), "round trip of that measurement", "1",
           COLLECTOR),
)

# Figures a probe kind reports beyond those its ProbeSpec declares (errors_<kind> per error kind).
MORE_FIGURES = {
    "tcp": ("sent_gbps", "streams", "duration_s", "bytes_received", "sender_mean_rtt_us"),
    "udp": ("requested_gbps", "sent_gbps", "sender_packets", "receiver_packets", "lost_packets", "out_of_order",
            "sender_drops", "duration_s", "valid"),
    "rtt": ("transmitted", "received", "min_us", "max_us", "mean_us", "mdev_us"),
    "connect": ("attempts", "connected", "errors", "errors_<kind>", "min_us", "max_us", "kernel_connects",
                "kernel_failures", "kernel_setup_sum_us", "kernel_setup_mean_us"),
    "http": ("requests", "ok", "errors", "errors_<kind>", "connections", "send_lag_p99_ms", "p90_ms", "max_ms",
             "mean_ms"),
    "dns": ("lookups", "answered", "min_ms", "max_ms", "mean_ms"),
}


def probe_families() -> list[Family]:
    out = [Family("cniscope_probe_ok", "gauge", ("node", "kind", "target", "path"),
                  "1 when the latest probe of this kind to this target succeeded", PAIRS, AGENT)]
    for spec in KINDS:
        figures = [f.name for f in spec.figures] + list(MORE_FIGURES.get(spec.kind, ()))
        for fig in dict.fromkeys(figures):
            name, _ = base_unit(f"cniscope_probe_{spec.kind}_{fig}")
            out.append(Family(name, "gauge", ("node", "kind", "target", "path"),
                              f"latest {spec.kind} probe figure {fig}", PAIRS, AGENT))
    return out


def capability_families() -> list[Family]:
    out = [Family(n, "gauge", ("node", "unit"), doc, "1 per inspection unit (9)", BOTH) for n, doc in UNIT_SERIES]
    per = {"cniscope_nat_rules": "≤ 3 (iptables-legacy, iptables-nft, nft)",
           "cniscope_bpf_map_fill_ratio": f"≤ {MAX_FILL_MAPS} (the fullest maps)"}
    out += [Family(n, "gauge", tuple(labels), doc, per.get(n, "≤ 1"), BOTH) for n, doc, labels in CENSUS_SERIES]
    return out


def families() -> list[Family]:
    counters = [Family(n, "counter", (), doc, "1 per collector", COLLECTOR) for n, _, doc in COLLECTOR_COUNTERS]
    return [*AGENT_FAMILIES, *NODE_FAMILIES, *counters, *STORAGE_FAMILIES, *SAMPLED, *capability_families(),
            *probe_families()]


_HELP: dict[str, str] = {}


def help_for(name: str, default: str) -> str:
    """The declared help of a sampled family, else ``default``."""
    if not _HELP:
        _HELP.update({f.name: f.help for f in SAMPLED})
    return _HELP.get(name, default)


def exposed_name(f: Family) -> str:
    """As a scrape shows it: counters end in ``_total``."""
    return f.name + "_total" if f.type == "counter" else f.name


def render_markdown() -> str:
    from cniscope.core.metrics_doc import render

    return render(families())


if __name__ == "__main__":
    print(render_markdown(), end="")
