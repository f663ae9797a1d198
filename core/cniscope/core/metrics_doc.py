"""METRICS.md, rendered from the series catalog (:mod:`cniscope.core.metrics_catalog`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

HEAD = """# Metrics

Generated from `core/cniscope/core/metrics_catalog.py` by `python -m cniscope.core.metrics_catalog >
METRICS.md`; a test fails when this file is not current. Every agent serves these on `--metrics-listen`
(the DaemonSet: `:9471`), the collector on its own `--metrics-listen` (`:9470`). Units are base units
(seconds, bytes, ratios, bits per second, cores); `promtool check metrics` is clean on both endpoints.
Recording rules, alerts and a Grafana dashboard built on these series:
`daemonset/overlays/prometheus-operator/`.

## Cardinality

* **Per node** (agent): the fixed families below are 1 series each; inspection units 9 each; NAT rules
  at most 3; BPF map fill at most {max_fill} (the fullest maps by name); CNI footprint 1 per CNI
  process name found (at most 8 names). A node with no CNI agent, no tracers and no Cilium maps
  exports none of those.
* **Per pair** (agent probe results, labels `node` = source, `target`, `path`, `kind`): the light mesh
  probes `mesh_fanout` peers per node (default 8, chosen by rendezvous hashing, so the choice is stable
  and every node is probed by about as many as it probes), on the pod path when both ends have a probe
  pod, else host to host. Pair series per node are therefore bounded by `mesh_fanout × 2 paths × figures`
  (rtt: 9 figures + `cniscope_probe_ok`), **not by the cluster size**: 5,000 nodes × 8 peers × 10 series
  = 400,000 mesh series, where a full mesh would be 250 million. Ad-hoc probes (`cniscope probe`, runs)
  add one series set per (kind, target, path) they used.
* **Collector**: the node families once per node it has seen; the sampled families and probe results
  of every node (its probe series carry `source` instead of `node`). At fleet scale scrape the agents;
  the collector's endpoint is for its own health (`cniscope_collector_*`, `cniscope_node_*`).

"""


def _table(rows: Sequence[Sequence[str]]) -> str:
    head = ["series (as scraped)", "type", "labels", "series per node", "endpoint", "meaning"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def render(families: Sequence[Any]) -> str:
    from cniscope.core.capability_metrics import MAX_FILL_MAPS

    sections: dict[str, list[Any]] = {}
    for f in families:
        if f.name.startswith("cniscope_probe_"):
            key = "Probe results (latest per kind, target and path)"
        elif f.name.startswith(("cniscope_unit_", "cniscope_nat_", "cniscope_kube_proxy_", "cniscope_bpf_")):
            key = "Inspection units and census (from the capability report)"
        elif f.name.startswith(("cniscope_node_", "cniscope_collector_")):
            key = "Collector: nodes and ingest"
        elif f.endpoints == "agent":
            key = "Agent: pipeline"
        else:
            key = "Sampled on each node (samplers and tracers)"
        sections.setdefault(key, []).append(f)
    text = HEAD.replace("{max_fill}", str(MAX_FILL_MAPS))
    for title, fams in sections.items():
        rows = [[f"`{f.name}_total`" if f.type == "counter" else f"`{f.name}`", f.type, ", ".join(f"`{lab}`" for lab in f.labels), f.cardinality,
                 f.endpoints, f.help] for f in fams]
        text += f"## {title}\n\n" + _table(rows) + "\n"
    return text.rstrip("\n") + "\n"
