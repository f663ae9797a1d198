"""``cniscope report``: cluster-wide reports from the collector."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any


def cmd_report_capabilities(ns: argparse.Namespace) -> int:
    from cniscope.cli import _grpc_error, _list_nodes, default_collector
    from cniscope.cli.capreport import render_matrix

    address = ns.collector or default_collector()
    try:
        nodes = asyncio.run(_list_nodes(address))
    except Exception as exc:
        raise _grpc_error(exc, address) from None
    print(render_matrix(nodes, ns.output))
    return 0


def register(sub: Any) -> None:
    rep = sub.add_parser("report", help="cluster-wide reports from the collector")
    rsub = rep.add_subparsers(dest="report_command", metavar="REPORT", required=True)
    p = rsub.add_parser("capabilities", help="the capability matrix: readiness items and units × nodes")
    p.add_argument("-o", "--output", choices=["table", "json", "markdown"], default="table")
    p.add_argument("--collector", default=None, help="collector address (CNISCOPE_COLLECTOR, else the lab)")
    p.set_defaults(func=cmd_report_capabilities)
