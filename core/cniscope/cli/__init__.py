"""The ``cniscope`` command. Top layer: it wires the pieces together and imports them lazily, so
``cniscope --help`` loads no bcc, textual or kubernetes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from cniscope.cli.collector_address import default_collector
from cniscope.core.errors import CniscopeError, ConnectionFailed
from cniscope.core.params import Param, Value
from cniscope.core.probekinds import KINDS, spec_for
from cniscope.core.probespec import PATHS
from cniscope.core.version import VERSION

EPILOG = """\
examples:
  cniscope lab up                         build a 3-node lab and start a collector + agents in it
  cniscope nodes                          list the nodes the collector sees
  cniscope probe rtt --from node1 --to node2 --path pod
  cniscope tui                            watch every node live
  cniscope lab down                       remove every trace of the lab

Every option is also an environment variable: --sample-interval ⇔ CNISCOPE_SAMPLE_INTERVAL.
Clients find the collector in CNISCOPE_COLLECTOR, else the local lab's socket, else 127.0.0.1:7400.
"""


# What a command that needs the collector says when none answers (on the same line as the error).
START_COLLECTOR = (" — this needs a running collector: start one with `cniscope lab up` (a local lab) or "
                   "`cniscope collector`, or name yours with --collector / CNISCOPE_COLLECTOR")


# Modules under cniscope/cli/ that add subcommands: each has ``register(subparsers)`` and imports
# its heavy dependencies inside the command functions only. The probe command sits between them.
BEFORE_PROBE: list[str] = ["daemon_cmd", "config_cmd", "lab_cmd", "report"]
AFTER_PROBE: list[str] = ["tui_cmd", "bench", "k8s_cmd", "node", "impair_cmd", "trace"]


def cmd_probe(ns: argparse.Namespace) -> int:
    from google.protobuf import json_format

    from cniscope.api.v1 import common_pb2

    spec = spec_for(ns.kind)
    given = {p.name: getattr(ns, "p_" + p.name) for p in spec.params}
    values = spec.params.validate({k: v for k, v in given.items() if v is not None})  # before contacting anyone
    req = common_pb2.ProbeRequest(kind=ns.kind, source_node=ns.source, target_node=ns.target or "",
                                  target_address=ns.address or "", path=ns.path, params=values.to_wire())
    show = ns.output != "json" and sys.stderr.isatty()
    result = asyncio.run(_run_probe(ns.collector, req, show_progress=show))
    if ns.output == "json":
        print(json.dumps(json_format.MessageToDict(result, preserving_proto_field_name=True), indent=2))
    else:
        from cniscope.core.render import probe_result_text

        print(probe_result_text(result))
    return 0 if result.ok else 1


async def _run_probe(address: str, req: Any, show_progress: bool = False) -> Any:
    from cniscope.client.grpc_collector import CollectorClient

    result = None
    async with CollectorClient(address) as client:
        async for upd in client.run_probe(req):
            if upd.WhichOneof("body") == "progress" and show_progress:
                pct = int(upd.progress.fraction * 100)
                bar = "█" * (pct // 5) + "░" * (20 - pct // 5)
                print(f"\r{bar} {pct:3d}% {upd.progress.message[:50]:<50}", end="", file=sys.stderr, flush=True)
            elif upd.WhichOneof("body") == "result":
                result = upd.result
    if show_progress:
        print("\r" + " " * 78 + "\r", end="", file=sys.stderr)
    if result is None:
        raise CniscopeError("the collector ended the probe without a result")
    return result


# ---- parser ---------------------------------------------------------------------------------------
def _param_parser(prm: Param) -> Callable[[str], Value]:
    """An option's converter: the parameter's own parsing and bounds, as argparse reports them."""
    def parse(text: str) -> Value:
        try:
            return prm.parse(text)
        except CniscopeError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = prm.type  # argparse names the type in its "invalid ... value" message
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cniscope", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Measure a Kubernetes cluster's pod network data plane node by node, and watch it live.",
    )
    parser.add_argument("--version", action="version", version=f"cniscope {VERSION}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    client_default = argparse.SUPPRESS

    import importlib

    def register(modules: list[str]) -> None:
        for mod in modules:
            importlib.import_module(f"cniscope.cli.{mod}").register(sub)

    register(BEFORE_PROBE)
    probe = sub.add_parser("probe", help="run one probe between two nodes, through the collector")
    psub = probe.add_subparsers(dest="kind", metavar="KIND", required=True)
    for spec in KINDS:
        p = psub.add_parser(spec.kind, help=spec.title, description=spec.describe())
        p.add_argument("--from", dest="source", required=True, help="source node")
        p.add_argument("--to", dest="target", default=None,
                       help="target node" if spec.needs_target else "target node (optional)")
        p.add_argument("--address", default=None, help="explicit target address (allow-listed)")
        p.add_argument("--path", choices=PATHS, default="host", help="host, pod or service (default host)")
        p.add_argument("--collector", default=client_default, help="collector address")
        p.add_argument("-o", "--output", choices=["text", "json"], default="text")
        for prm in spec.params:
            flag = "--" + prm.name.replace("_", "-")
            if prm.type == "bool":
                p.add_argument(flag, dest="p_" + prm.name, action=argparse.BooleanOptionalAction,
                               default=None, help=prm.describe())
            else:
                p.add_argument(flag, dest="p_" + prm.name, type=_param_parser(prm), default=None,
                               choices=list(prm.choices) or None, help=prm.describe())
        p.set_defaults(func=cmd_probe)

    register(AFTER_PROBE)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not getattr(ns, "func", None):
        parser.print_help()
        return 2
    if hasattr(ns, "collector") is False and ns.command == "probe":
        ns.collector = default_collector()
    try:
        return int(ns.func(ns) or 0)
    except CniscopeError as exc:
        hint = START_COLLECTOR if isinstance(exc, ConnectionFailed) else ""
        print(f"cniscope: {exc.title}: {exc}{hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        with contextlib.suppress(Exception):
            sys.stdout.close()
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
