"""``cniscope trace NAME``: run one bcc tracer here for a few seconds and print what it counted."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from cniscope.core.errors import NotFound, ValidationError

MAX_SECONDS = 3600.0


def cmd_trace(ns: argparse.Namespace) -> int:
    from cniscope.agent.tracers import TRACERS

    if ns.tracer not in TRACERS:
        raise NotFound(f"unknown tracer {ns.tracer!r}; known: {', '.join(TRACERS.names())}")
    if not 0 < ns.seconds <= MAX_SECONDS:
        raise ValidationError(f"--seconds must be in (0, {MAX_SECONDS:g}]")
    tracer = TRACERS.get(ns.tracer)(ns.netns)
    tracer.start()  # Unavailable (no bcc, headers, tracefs) propagates as "unavailable: reason"
    try:
        time.sleep(ns.seconds)
        figures = tracer.figures()
    finally:
        tracer.stop()
    out: dict[str, Any] = {"tracer": ns.tracer, "seconds": ns.seconds, "netns": ns.netns, "figures": figures}
    if ns.output == "json":
        print(json.dumps(out, indent=2, sort_keys=True))
    else:
        from cniscope.core.render import table

        print(f"{ns.tracer} for {ns.seconds:g} s" + (f" in {ns.netns}" if ns.netns else " (all namespaces)"))
        print(table(["FIGURE", "VALUE"], [[k, f"{v:g}"] for k, v in sorted(figures.items())]))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("trace", help="run a bcc tracer (tcpconnlat, retrans, drops) here for a while")
    p.add_argument("tracer", metavar="TRACER", help="tcpconnlat | retrans | drops")
    p.add_argument("--seconds", type=float, default=10.0, help="how long to trace (default 10)")
    p.add_argument("--netns", metavar="PATH", help="only this network namespace (e.g. /run/netns/NAME)")
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    p.set_defaults(func=cmd_trace)
