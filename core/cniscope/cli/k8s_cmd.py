"""Kubernetes subcommands: the probe pod's process, and the cluster's data-plane fingerprint."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from cniscope.cli.kubeconfig_flags import add_kubeconfig_flags


def cmd_probe_pod(ns: argparse.Namespace) -> int:
    from cniscope.agent import probe_pod
    from cniscope.cli.daemon_cmd import run_until_signal
    from cniscope.core.logging import setup_logging

    setup_logging(ns.log_level or os.environ.get("CNISCOPE_LOG_LEVEL", "info"))
    port = ns.port or int(os.environ.get("CNISCOPE_PROBE_POD_PORT", "7421"))
    return run_until_signal(probe_pod.serve(ns.address, port))


def cmd_fingerprint(ns: argparse.Namespace) -> int:
    from cniscope.agent import cluster_api
    from cniscope.core.errors import Unavailable
    from cniscope.core.hostpaths import HostPaths

    view = cluster_api.ClusterView.connect("on" if not ns.node_only else "off", context=ns.context,
                                           kubeconfig=ns.kubeconfig)
    if view is None:
        fp = cluster_api.node_fingerprint(HostPaths.from_env())
    else:
        try:
            fp = view.fingerprint()
        except Unavailable as exc:
            raise Unavailable(f"{exc} (use --node-only to read this machine instead)") from None
    d: dict[str, Any] = fp.to_dict()
    if ns.output == "json":
        print(json.dumps(d, indent=2))
    else:
        for k in ("scenario", "cni", "cni_version", "kube_proxy", "routing", "ipam", "tuning", "source", "notes"):
            v = d[k]
            print(f"{k:<12} {', '.join(v) if isinstance(v, list) else (v if v not in (None, '') else '-')}")
        for fact, where in d["sources"].items():
            print(f"{'from' if fact == next(iter(d['sources'])) else '':<12} {fact}: {where}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("probe-pod", help="serve the pod-side targets (the probe pod's process)")
    p.add_argument("--address", default="0.0.0.0", help="bind address (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=None,
                   help="accept-and-close port; HTTP echo on port+1 (default 7421; CNISCOPE_PROBE_POD_PORT)")
    p.add_argument("--log-level", default=None)
    p.set_defaults(func=cmd_probe_pod)

    k = sub.add_parser("k8s", help="Kubernetes: the cluster's data-plane fingerprint, install preflight")
    ksub = k.add_subparsers(dest="k8s_cmd")
    f = ksub.add_parser("fingerprint", help="CNI and version, kube-proxy mode, routing, IPAM, tuning flags "
                                            "(the API kubectl would use, or the pod's service account)")
    f.add_argument("--node-only", action="store_true", help="read this machine's processes instead of the API")
    add_kubeconfig_flags(f)
    f.add_argument("-o", "--output", choices=["text", "json"], default="text")
    f.set_defaults(func=cmd_fingerprint)
    from cniscope.cli import preflight_cmd

    preflight_cmd.register_k8s(ksub)
