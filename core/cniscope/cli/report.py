"""``cniscope nodes`` and ``cniscope report``: what the collector sees, cluster-wide."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from cniscope.cli.collector_address import collector_of


def _nodes(ns: argparse.Namespace) -> list[Any]:
    from cniscope.client.grpc_collector import list_nodes

    return asyncio.run(list_nodes(collector_of(ns)))


def cmd_nodes(ns: argparse.Namespace) -> int:
    nodes = _nodes(ns)
    if ns.output == "json":
        from google.protobuf import json_format

        print(json.dumps([json_format.MessageToDict(n, preserving_proto_field_name=True) for n in nodes], indent=2))
        return 0
    from cniscope.core.render import nodes_table

    print(nodes_table(nodes))
    return 0


def cmd_report_capabilities(ns: argparse.Namespace) -> int:
    from cniscope.cli.capreport import render_matrix

    print(render_matrix(_nodes(ns), ns.output))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("nodes", help="list nodes as the collector sees them")
    p.add_argument("--collector", default=None, help="collector address")
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    p.set_defaults(func=cmd_nodes)

    rep = sub.add_parser("report", help="cluster-wide reports from the collector")
    rsub = rep.add_subparsers(dest="report_command", metavar="REPORT", required=True)
    p = rsub.add_parser("capabilities", help="the capability matrix: readiness items and units × nodes")
    p.add_argument("-o", "--output", choices=["table", "json", "markdown"], default="table")
    p.add_argument("--collector", default=None, help="collector address (CNISCOPE_COLLECTOR, else the lab)")
    p.set_defaults(func=cmd_report_capabilities)
