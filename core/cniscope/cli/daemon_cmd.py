"""``cniscope agent`` and ``cniscope collector``: the long-running processes, stopped by SIGINT or
SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
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
    from cniscope.cli.config_cmd import config_from_args
    from cniscope.core.config import AgentConfig
    from cniscope.core.logging import setup_logging

    cfg = config_from_args(ns, AgentConfig)
    setup_logging(cfg.log_level)
    return run_until_signal(run_agent(cfg))


def cmd_collector(ns: argparse.Namespace) -> int:
    from cniscope.cli.config_cmd import config_from_args
    from cniscope.collector.runs.service_backend import LabBackends
    from cniscope.collector.runs.service_fronts import FrontsSource
    from cniscope.collector.server import run_collector
    from cniscope.core.config import CollectorConfig
    from cniscope.core.logging import setup_logging

    cfg = config_from_args(ns, CollectorConfig)
    setup_logging(cfg.log_level)
    listen = [a for a in cfg.listen.split(",") if a.strip()]
    lab = cfg.lab
    backends: LabBackends = {}
    fronts: FrontsSource | None = None
    if lab is not None:  # this collector serves a lab: service scaling loads its kube-proxy-style rules
        from cniscope.lab.lab_fronts import fronts_source
        from cniscope.lab.lab_services import lab_backends

        backends = lab_backends(lab)
        fronts = fronts_source(lab)  # the Services fronting its probe pods, as lab up programmed them
    return run_until_signal(run_collector(cfg, listen, backends, fronts))


def register(sub: Any) -> None:
    from cniscope.cli.config_cmd import add_settings
    from cniscope.core.config import AgentConfig, CollectorConfig

    p = sub.add_parser("agent", help="run the per-node agent (DaemonSet / lab node)",
                       epilog="`cniscope config show agent [FLAGS]` prints the effective settings and their sources.")
    add_settings(p, AgentConfig)
    p.set_defaults(func=cmd_agent)

    p = sub.add_parser("collector", help="run the collector agents stream into",
                       epilog="`cniscope config show collector [FLAGS]` prints the effective settings and their "
                              "sources.")
    add_settings(p, CollectorConfig)
    p.set_defaults(func=cmd_collector)
