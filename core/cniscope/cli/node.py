"""``cniscope node``: this node's inspection report, run locally (no collector), and the opt-in XDP test."""

from __future__ import annotations

import argparse
import json
from typing import Any

from cniscope.core.errors import CniscopeError, NotFound, ToolMissing

XDP_MODES = ("driver", "generic", "link")


def cmd_node_report(ns: argparse.Namespace) -> int:
    from cniscope.agent import capabilities
    from cniscope.agent.inspectors import INSPECTORS
    from cniscope.cli.capreport import render_node
    from cniscope.core.hostpaths import HostPaths

    only = ns.only or None
    if only:
        unknown = [u for u in only if u not in INSPECTORS]
        if unknown:
            raise NotFound(f"unknown unit(s) {', '.join(unknown)}; known: {', '.join(INSPECTORS.names())}")
    report = capabilities.collect(HostPaths.from_env(), only=only)
    print(render_node(report, ns.output))
    return 0 if all(u.ok for u in report.units) else 1


def cmd_node_xdp_test(ns: argparse.Namespace) -> int:
    try:
        from cniscope.agent.xdp_trial import run_xdp_test
    except ImportError:
        raise ToolMissing("the XDP attach test is not available in this build") from None
    wanted = list(XDP_MODES) if ns.mode == "all" else [ns.mode]
    modes = ["native" if m == "driver" else m for m in wanted]  # driver mode is XDP_FLAGS_DRV_MODE
    result: dict[str, Any] = run_xdp_test(ns.iface, modes)
    if ns.output == "json":
        print(json.dumps(result, indent=2, sort_keys=True, default=str))
        return 0
    from cniscope.core.render import table

    if result.get("refused"):
        raise CniscopeError(str(result["refused"]), title="xdp test refused")
    rows = []
    for mode, r in (result.get("results") or {}).items():
        if isinstance(r, dict):
            ok = r.get("ok")
            rows.append(["driver" if mode == "native" else mode, "attached + detached" if ok else "refused", r.get("error", "") or ""])
        else:
            rows.append([mode, str(r), ""])
    if not rows:
        print(json.dumps(result, indent=2, sort_keys=True, default=str))
        return 0
    ro = result.get("read_only", {})
    print(f"XDP_PASS attach test on {ns.iface} ({result.get('kind', '?')}); read-only report: native XDP "
          f"{ {True: 'yes', False: 'no'}.get(ro.get('native'), 'unknown') }, features {ro.get('features', [])}")
    print(table(["MODE", "RESULT", "KERNEL SAYS"], rows))
    if "agrees" in result:
        print(f"driver-mode result {'agrees' if result['agrees'] else 'DISAGREES'} with the read-only report")
    return 0


def register(sub: Any) -> None:
    node = sub.add_parser("node", help="this node: inspection report, XDP attach test")
    nsub = node.add_subparsers(dest="node_command", metavar="ACTION", required=True)
    p = nsub.add_parser("report", help="run every inspection unit here and print the capability report")
    p.add_argument("-o", "--output", choices=["table", "json", "markdown"], default="table")
    p.add_argument("--only", action="append", metavar="UNIT", help="run only this unit (repeatable)")
    p.set_defaults(func=cmd_node_report)
    p = nsub.add_parser("xdp-test", help="attach an XDP_PASS program to IFACE in each mode, detach, report")
    p.add_argument("iface", metavar="IFACE", help="the interface to test (nothing else is touched)")
    p.add_argument("--mode", choices=[*XDP_MODES, "all"], default="all")
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    p.set_defaults(func=cmd_node_xdp_test)

