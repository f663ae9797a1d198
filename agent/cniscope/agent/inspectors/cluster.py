"""The data-plane fingerprint and this node's metadata: from the Kubernetes API when there is one,
else from what runs on the node (the lab)."""

from __future__ import annotations

from cniscope.agent.inspectors.unit import READY, UNKNOWN, UnitResult
from cniscope.api.v1 import capabilities_pb2 as cap
from cniscope.core.config import AgentConfig, load
from cniscope.core.errors import Unavailable
from cniscope.core.hostpaths import HostPaths


def summarize(d: cap.ClusterDetail) -> str:
    """``CNI cilium 1.16.5, kube-proxy ebpf, routing native, ipam eni, scenario E, from the Kubernetes API;
    node m6i.xlarge us-east-1a``."""
    fp = d.fingerprint
    parts = ["CNI " + " ".join(x for x in (fp.cni or "unknown", fp.cni_version) if x), f"kube-proxy {fp.kube_proxy or '?'}",
             f"routing {fp.routing or '?'}", f"ipam {fp.ipam or '?'}"]
    if fp.tuning:
        parts.append("tuning " + " ".join(fp.tuning))
    if fp.scenario:
        parts.append(f"scenario {fp.scenario}")
    parts.append({"kubernetes": "from the Kubernetes API",
                  "kubernetes+node": "from the Kubernetes API and this node's processes"}.get(
                      fp.source, "from this node (no Kubernetes API)"))
    out = ", ".join(parts)
    where = " ".join(x for x in (d.node.instance_type, d.node.zone) if x)
    if where:
        out += f"; node {where}"
    elif d.node_error:
        out += f"; node metadata: {d.node_error}"
    return out


def inspect_cluster(paths: HostPaths) -> UnitResult:
    from cniscope.agent import cluster_api

    cfg = load(AgentConfig)
    d = cap.ClusterDetail()
    res = UnitResult(d)
    try:
        view = cluster_api.ClusterView.connect(cfg.kubernetes)
    except Unavailable as exc:
        view, why = None, str(exc)
    else:
        why = "no Kubernetes API here" if view is None else ""
    if view is not None:
        try:
            fp = view.fingerprint(paths)
            res.item("kubernetes_api", READY, "fingerprint from the API server")
        except Unavailable as exc:
            fp, why = cluster_api.node_fingerprint(paths), str(exc)
            res.item("kubernetes_api", UNKNOWN, why)
        try:
            d.node.CopyFrom(cap.NodeMeta(**view.node(cfg.node).to_dict()))
        except Unavailable as exc:
            d.node_error = str(exc)
    else:
        fp = cluster_api.node_fingerprint(paths)
        res.item("kubernetes_api", UNKNOWN, why)
    d.fingerprint.CopyFrom(fp.to_proto())
    d.allow_list.CopyFrom(cluster_api.current_allow_list(cfg).to_proto())
    res.summary = summarize(d)
    return res
