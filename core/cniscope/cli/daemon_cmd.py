"""``cniscope agent`` and ``cniscope collector``: the long-running processes, stopped by SIGINT or
SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Coroutine
from typing import Any


def run_until_signal(coro: Coroutine[Any, Any, Any]) -> int:
    """Run ``coro`` on a fresh event loop; SIGINT or SIGTERM cancels it and the process exits 0."""
    loop = asyncio.new_event_loop()
    task = loop.create_task(coro)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        loop.run_until_complete(task)
    except asyncio.CancelledError:
        return 0
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    return 0


def cmd_agent(ns: argparse.Namespace) -> int:
    from cniscope.agent.node_agent import run_agent
    from cniscope.core.config import AgentConfig, load
    from cniscope.core.logging import setup_logging

    cfg = load(AgentConfig, {
        "node": ns.node, "collector": ns.collector, "host_ip": ns.host_ip, "pod_ip": ns.pod_ip,
        "pod_netns": ns.pod_netns, "sample_interval": ns.sample_interval, "log_level": ns.log_level,
        "metrics_listen": ns.metrics_listen,
    })
    setup_logging(cfg.log_level)
    return run_until_signal(run_agent(cfg))


def cmd_collector(ns: argparse.Namespace) -> int:
    from cniscope.collector.runs.service_backend import LabBackends
    from cniscope.collector.server import run_collector
    from cniscope.core.config import CollectorConfig, load
    from cniscope.core.logging import setup_logging

    cfg = load(CollectorConfig, {"db": ns.db, "log_level": ns.log_level, "metrics_listen": ns.metrics_listen})
    setup_logging(cfg.log_level)
    listen = ns.listen or [cfg.listen]
    lab = ns.lab if ns.lab is not None else os.environ.get("CNISCOPE_LAB")
    backends: LabBackends = {}
    if lab is not None:  # this collector serves a lab: service scaling loads its kube-proxy-style rules
        from cniscope.lab.lab_services import lab_backends

        backends = lab_backends(lab)
    return run_until_signal(run_collector(cfg, listen, backends))


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-level", default=None, help="debug, info, warning, error (CNISCOPE_LOG_LEVEL)")


def register(sub: Any) -> None:
    p = sub.add_parser("agent", help="run the per-node agent (DaemonSet / lab node)")
    p.add_argument("--collector", default=None, help="collector address HOST:PORT (CNISCOPE_COLLECTOR)")
    p.add_argument("--node", default=None, help="this node's name (default: hostname; CNISCOPE_NODE)")
    p.add_argument("--host-ip", default=None, help="this node's address for host-path probes")
    p.add_argument("--pod-ip", default=None, help="the probe pod's address for pod-path probes")
    p.add_argument("--pod-netns", default=None, help="the probe pod's netns (/run/netns/X or /proc/PID/ns/net)")
    p.add_argument("--sample-interval", type=float, default=None, help="seconds between sample batches (5)")
    p.add_argument("--metrics-listen", default=None, help="serve Prometheus /metrics here (HOST:PORT)")
    _add_common(p)
    p.set_defaults(func=cmd_agent)

    p = sub.add_parser("collector", help="run the collector agents stream into")
    p.add_argument("--listen", action="append", default=None,
                   help="HOST:PORT or unix:///path; repeat for several (default 127.0.0.1:7400)")
    p.add_argument("--db", default=None, help="SQLite file (default cniscope.db; CNISCOPE_DB)")
    p.add_argument("--metrics-listen", default=None, help="serve Prometheus /metrics here (HOST:PORT)")
    p.add_argument("--lab", default=None, metavar="NAME",
                   help="serve the lab NAME: `bench services` may load kube-proxy-style rules into its node "
                        "namespaces (CNISCOPE_LAB; '' = the default lab)")
    _add_common(p)
    p.set_defaults(func=cmd_collector)
