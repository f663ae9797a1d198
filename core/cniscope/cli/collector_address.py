"""Where people-facing commands find the collector: ``--collector``, else CNISCOPE_COLLECTOR, else
the local lab's socket, else 127.0.0.1:7400."""

from __future__ import annotations

import argparse
import os

FALLBACK = "127.0.0.1:7400"


def default_collector() -> str:
    env = os.environ.get("CNISCOPE_COLLECTOR")
    if env:
        return env
    from cniscope.lab.lab import Lab

    lab = Lab()
    if lab.collector_socket.exists():
        return lab.local_collector
    return FALLBACK


def collector_of(ns: argparse.Namespace) -> str:
    """The address a command's ``--collector`` names, or the default one."""
    return str(getattr(ns, "collector", None) or default_collector())
