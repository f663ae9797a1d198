"""The data-plane fingerprint and this node's metadata: from the Kubernetes API when there is one,
else from what runs on the node (the lab)."""

from __future__ import annotations

from cniscope.agent.inspectors.unit import READY, UNKNOWN, UnitResult
from cniscope.core.config import AgentConfig, load
from cniscope.core.errors import Unavailable
from cniscope.core.fingerprint import from_node
from cniscope.core.hostpaths import HostPaths


def inspect_cluster(paths: HostPaths) -> UnitResult:
    from cniscope.agent import cluster_api

    cfg = load(AgentConfig)
    res = UnitResult()
    try:
        view = cluster_api.ClusterView.connect(cfg.kubernetes)
    except Unavailable as exc:
        view, why = None, str(exc)
    else:
        why = "no Kubernetes API here" if view is None else ""
    if view is not None:
        try:
            fp = view.fingerprint()
            res.item("kubernetes_api", READY, "fingerprint from the API server")
        except Unavailable as exc:
            fp, why = from_node(cluster_api.node_facts(paths)), str(exc)
            res.item("kubernetes_api", UNKNOWN, why)
        try:
            res.detail["node"] = view.node(cfg.node).to_dict()
        except Unavailable as exc:
            res.detail["node_error"] = str(exc)
    else:
        fp = from_node(cluster_api.node_facts(paths))
        res.item("kubernetes_api", UNKNOWN, why)
    res.detail["fingerprint"] = fp.to_dict()
    return res
