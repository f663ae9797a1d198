"""The ``cniscope`` command. Top layer: it wires the pieces together and imports them lazily, so
``cniscope --help`` loads no bcc, textual or kubernetes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from cniscope.core.errors import CniscopeError
from cniscope.core.probespec import PATHS, SPECS
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


# Modules under cniscope/cli/ that add subcommands: each has ``register(subparsers)`` and imports
# its heavy dependencies inside the command functions only.
EXTENSIONS: list[str] = ["bench", "k8s_cmd", "node", "report", "impair_cmd", "trace"]


def default_collector() -> str:
    env = os.environ.get("CNISCOPE_COLLECTOR")
    if env:
        return env
    from cniscope.lab.lab import Lab

    lab = Lab()
    if lab.collector_socket.exists():
        return lab.local_collector
    return "127.0.0.1:7400"


# ---- agent / collector ----------------------------------------------------------------------------
def cmd_agent(ns: argparse.Namespace) -> int:
    from cniscope.agent.app import run_agent
    from cniscope.core.config import AgentConfig, load
    from cniscope.core.logging import setup_logging

    cfg = load(AgentConfig, {
        "node": ns.node, "collector": ns.collector, "host_ip": ns.host_ip, "pod_ip": ns.pod_ip,
        "pod_netns": ns.pod_netns, "sample_interval": ns.sample_interval, "log_level": ns.log_level,
        "metrics_listen": ns.metrics_listen,
    })
    setup_logging(cfg.log_level)
    return _run_async(run_agent(cfg))


def cmd_collector(ns: argparse.Namespace) -> int:
    from cniscope.collector.server import run_collector
    from cniscope.core.config import CollectorConfig, load
    from cniscope.core.logging import setup_logging

    cfg = load(CollectorConfig, {"db": ns.db, "log_level": ns.log_level, "metrics_listen": ns.metrics_listen})
    setup_logging(cfg.log_level)
    listen = ns.listen or [cfg.listen]
    return _run_async(run_collector(cfg, listen))


def _run_async(coro: Any) -> int:
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


# ---- lab ------------------------------------------------------------------------------------------
def _lab(ns: argparse.Namespace) -> Any:
    from cniscope.lab.lab import Lab, LabSpec

    return Lab(LabSpec(name=ns.name, nodes=getattr(ns, "nodes", 3), pods_per_node=getattr(ns, "pods_per_node", 1)))


def _lab_existing(ns: argparse.Namespace) -> Any:
    """The lab by name with the shape it was built with."""
    import json as _json

    from cniscope.lab.lab import STATE_ROOT, Lab, LabSpec

    try:
        spec = _json.loads((STATE_ROOT / ns.name / "state.json").read_text())["spec"]
        return Lab(LabSpec(name=ns.name, nodes=spec["nodes"], pods_per_node=spec["pods_per_node"]))
    except (OSError, ValueError, KeyError):
        return Lab(LabSpec(name=ns.name))


def cmd_lab_up(ns: argparse.Namespace) -> int:
    from cniscope.agent.tracers import TRACERS

    tracers = [t.strip() for t in ns.tracers.split(",") if t.strip()]
    unknown = [t for t in tracers if t not in TRACERS]
    if unknown:
        raise CniscopeError(f"unknown tracer(s) {', '.join(unknown)}; known: {', '.join(TRACERS.names())}")
    lab = _lab(ns)
    lab.up()
    if not ns.bare:
        lab.start_cluster(sample_interval=ns.sample_interval, tracers=tracers)
        _wait_nodes(lab.local_collector, ns.nodes, timeout=ns.wait)
    st = lab.status()
    if ns.output == "json":
        print(json.dumps(st, indent=2))
    else:
        print(f"lab {st['name']}: {len(st['nodes'])} nodes, collector {st['collector']} "
              f"(from this host: {st['collector_local']})")
        for n in st["nodes"]:
            print(f"  {n['name']:<8} host {n['host_ip']:<14} pod {n['pods'][0]['ip']:<14} netns {n['netns']}")
        if not ns.bare:
            print("next: cniscope tui   |   cniscope probe rtt --from node1 --to node2   |   cniscope lab down")
    return 0


def cmd_lab_down(ns: argparse.Namespace) -> int:
    removed = _lab_existing(ns).down()
    print(f"lab {ns.name}: removed {len(removed)} objects" if removed else f"lab {ns.name}: nothing to remove")
    return 0


def cmd_lab_status(ns: argparse.Namespace) -> int:
    print(json.dumps(_lab_existing(ns).status(), indent=2))
    return 0


def cmd_lab_exec(ns: argparse.Namespace) -> int:
    from cniscope.lab import netns

    lab = _lab_existing(ns)
    target = ns.where
    names = {n.name: n for n in lab.nodes()}
    if target in names:
        nsname = names[target].netns
    elif target.endswith("-pod") and target[:-4] in names:
        nsname = names[target[:-4]].pod_netns
    elif target == "fabric":
        nsname = lab.fabric
    else:
        raise CniscopeError(f"unknown lab place {target!r}: use fabric, NODE or NODE-pod "
                            f"({', '.join(names)})")
    argv = ns.argv[1:] if ns.argv and ns.argv[0] == "--" else ns.argv
    if not argv:
        argv = [os.environ.get("SHELL", "/bin/sh")]
    os.execvp("nsenter", netns.nsenter_argv(nsname, argv))
    return 0  # not reached


def _wait_nodes(address: str, count: int, timeout: float) -> None:
    import time

    from cniscope.core.errors import ConnectionFailed

    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        try:
            nodes = asyncio.run(_list_nodes(address, deadline=2))
            seen = sum(1 for n in nodes if n.status == 1)
            if seen >= count:
                return
        except Exception:  # the collector may still be starting
            pass
        time.sleep(0.3)
    raise ConnectionFailed(f"only {seen} of {count} agents connected to {address} within {timeout:.0f}s; "
                           "see the logs under the lab's state_dir (cniscope lab status)")


# ---- clients --------------------------------------------------------------------------------------
async def _list_nodes(address: str, deadline: float = 10) -> list[Any]:
    from cniscope.api.v1 import cluster_pb2, cluster_pb2_grpc
    from cniscope.core import grpcutil, security

    async with grpcutil.insecure_channel(address, credentials=security.client_credentials_from_env()) as ch:
        stub = cluster_pb2_grpc.ClusterStub(ch)
        resp = await stub.ListNodes(cluster_pb2.ListNodesRequest(), timeout=deadline,
                                    metadata=_client_metadata())
        return list(resp.nodes)


def _client_metadata() -> tuple[tuple[str, str], ...]:
    from cniscope.core.config import read_token

    tok = read_token(os.environ.get("CNISCOPE_TOKEN_FILE", ""))
    return (("authorization", f"Bearer {tok}"),) if tok else ()


def _grpc_error(exc: Exception, address: str) -> CniscopeError:
    import grpc

    from cniscope.core.errors import ConnectionFailed

    if isinstance(exc, grpc.aio.AioRpcError):
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            return ConnectionFailed(f"cannot reach the collector at {address}: {exc.details()}")
        err = CniscopeError(exc.details() or exc.code().name, title=exc.code().name.lower().replace("_", " "))
        return err
    return CniscopeError(str(exc))


def cmd_nodes(ns: argparse.Namespace) -> int:
    from google.protobuf import json_format

    try:
        nodes = asyncio.run(_list_nodes(ns.collector))
    except Exception as exc:
        raise _grpc_error(exc, ns.collector) from None
    if ns.output == "json":
        print(json.dumps([json_format.MessageToDict(n, preserving_proto_field_name=True) for n in nodes], indent=2))
        return 0
    from cniscope.core.render import nodes_table

    print(nodes_table(nodes))
    return 0


def cmd_probe(ns: argparse.Namespace) -> int:
    from google.protobuf import json_format

    from cniscope.api.v1 import common_pb2

    spec = SPECS[ns.kind]
    params: dict[str, str] = {}
    for p in spec.params.params:
        v = getattr(ns, "p_" + p.name)
        if v is not None:
            params[p.name] = str(v).lower() if isinstance(v, bool) else str(v)
    spec.params.validate(params)  # refuse before contacting anyone
    req = common_pb2.ProbeRequest(kind=ns.kind, source_node=ns.source, target_node=ns.target or "",
                                  target_address=ns.address or "", path=ns.path, params=params)
    show = ns.output != "json" and sys.stderr.isatty()
    try:
        result = asyncio.run(_run_probe(ns.collector, req, show_progress=show))
    except CniscopeError:
        raise
    except Exception as exc:
        raise _grpc_error(exc, ns.collector) from None
    if ns.output == "json":
        print(json.dumps(json_format.MessageToDict(result, preserving_proto_field_name=True), indent=2))
    else:
        from cniscope.core.render import probe_result_text

        print(probe_result_text(result))
    return 0 if result.ok else 1


async def _run_probe(address: str, req: Any, show_progress: bool = False) -> Any:
    from cniscope.api.v1 import cluster_pb2_grpc
    from cniscope.core import grpcutil, security

    result = None
    async with grpcutil.insecure_channel(address, credentials=security.client_credentials_from_env()) as ch:
        stub = cluster_pb2_grpc.ClusterStub(ch)
        async for upd in stub.RunProbe(req, metadata=_client_metadata()):
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


# ---- tui / demo -----------------------------------------------------------------------------------
def cmd_tui(ns: argparse.Namespace) -> int:
    from cniscope.tui.app import run_tui

    return run_tui(collector=ns.collector, replay=ns.replay, record=ns.record)


def cmd_demo(ns: argparse.Namespace) -> int:
    from cniscope.lab.lab import Lab, LabSpec

    lab = Lab(LabSpec(name="cniscope", nodes=ns.nodes))
    print(f"cniscope demo: building a {ns.nodes}-node lab (network namespaces, 198.18.0.0/15)…", flush=True)
    lab.up()
    lab.start_cluster(sample_interval=1.0)
    try:
        _wait_nodes(lab.local_collector, ns.nodes, timeout=30)
        print(f"collector + {ns.nodes} agents up; collector at {lab.local_collector}", flush=True)
        if sys.stdout.isatty() and not ns.no_tui:
            from cniscope.tui.app import run_tui

            run_tui(collector=lab.local_collector)
        else:
            asyncio.run(_demo_report(lab.local_collector, [n.name for n in lab.nodes()]))
    except KeyboardInterrupt:
        pass
    finally:
        if not ns.keep:
            lab.down()
            print("lab removed (cniscope lab down).")
        else:
            print("lab left running: cniscope tui | cniscope lab down")
    return 0


async def _demo_report(address: str, nodes: list[str]) -> None:
    from cniscope.api.v1 import common_pb2
    from cniscope.core.render import rtt_matrix

    results = {}
    for path in ("host", "pod"):
        for a in nodes:
            for b in nodes:
                if a == b:
                    continue
                req = common_pb2.ProbeRequest(kind="rtt", source_node=a, target_node=b, path=path,
                                              params={"count": "20", "interval": "0.05"})
                results[(path, a, b)] = await _run_probe(address, req)
    print(rtt_matrix(nodes, results))
    if len(nodes) < 2:
        return
    # one pass of the rest of the suite between the first two nodes, pod to pod
    from cniscope.core.render import demo_suite_table

    suite = [
        ("tcp", {"duration": "3"}), ("udp", {"duration": "3", "rate_mbps": "50"}),
        ("connect", {"count": "200"}), ("http", {"duration": "3", "qps": "200"}),
    ]
    rows = []
    for kind, params in suite:
        req = common_pb2.ProbeRequest(kind=kind, source_node=nodes[0], target_node=nodes[1], path="pod",
                                      params=params)
        try:
            rows.append(await _run_probe(address, req))
        except Exception as exc:  # one probe's failure is a row, not the end of the demo
            rows.append(common_pb2.ProbeResult(kind=kind, ok=False, error=str(exc)))
    print()
    print(f"probe suite, {nodes[0]} pod → {nodes[1]} pod")
    print(demo_suite_table(rows))


# ---- parser ---------------------------------------------------------------------------------------
def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-level", default=None, help="debug, info, warning, error (CNISCOPE_LOG_LEVEL)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cniscope", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Measure a Kubernetes cluster's pod network data plane node by node, and watch it live.",
    )
    parser.add_argument("--version", action="version", version=f"cniscope {VERSION}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    client_default = argparse.SUPPRESS

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
    _add_common(p)
    p.set_defaults(func=cmd_collector)

    lab = sub.add_parser("lab", help="the network-namespace lab: a small cluster on this machine")
    lsub = lab.add_subparsers(dest="lab_command", metavar="ACTION", required=True)
    p = lsub.add_parser("up", help="build the lab (idempotent) and start a collector and one agent per node")
    p.add_argument("--nodes", type=int, default=3, help="node namespaces (default 3)")
    p.add_argument("--pods-per-node", type=int, default=1, help="pod namespaces behind each node (default 1)")
    p.add_argument("--bare", action="store_true", help="build the network only; start no processes")
    p.add_argument("--sample-interval", type=float, default=2.0, help="agents' sample interval (2 s)")
    p.add_argument("--tracers", default="", help="bcc tracers in every agent, e.g. tcpconnlat; each traces its "
                                                 "node's probe pod namespace (default: $CNISCOPE_TRACERS)")
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for agents to connect")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_lab_up)
    p = lsub.add_parser("down", help="stop the lab's processes and remove every namespace it made")
    p.set_defaults(func=cmd_lab_down)
    p = lsub.add_parser("status", help="print the lab as JSON")
    p.set_defaults(func=cmd_lab_status)
    p = lsub.add_parser("exec", help="run a command inside a lab namespace: fabric, NODE or NODE-pod")
    p.add_argument("where")
    p.add_argument("argv", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_lab_exec)
    for lp in lsub.choices.values():
        lp.add_argument("--name", default="cniscope", help="lab name (default cniscope)")

    p = sub.add_parser("nodes", help="list nodes as the collector sees them")
    p.add_argument("--collector", default=client_default, help="collector address")
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    p.set_defaults(func=cmd_nodes)

    probe = sub.add_parser("probe", help="run one probe between two nodes, through the collector")
    psub = probe.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind, spec in SPECS.items():
        p = psub.add_parser(kind, help=spec.summary, description=spec.summary)
        p.add_argument("--from", dest="source", required=True, help="source node")
        p.add_argument("--to", dest="target", default=None, help="target node")
        p.add_argument("--address", default=None, help="explicit target address (allow-listed)")
        p.add_argument("--path", choices=PATHS, default="host", help="host, pod or service (default host)")
        p.add_argument("--collector", default=client_default, help="collector address")
        p.add_argument("-o", "--output", choices=["text", "json"], default="text")
        for prm in spec.params.params:
            flag = "--" + prm.name.replace("_", "-")
            if prm.type == "bool":
                p.add_argument(flag, dest="p_" + prm.name, action=argparse.BooleanOptionalAction,
                               default=None, help=prm.describe())
            else:
                conv: Callable[[str], Any] = {"int": int, "float": float}.get(prm.type, str)
                p.add_argument(flag, dest="p_" + prm.name, type=conv, default=None,
                               choices=list(prm.choices) or None, help=prm.describe())
        p.set_defaults(func=cmd_probe)

    p = sub.add_parser("tui", help="the live terminal UI")
    p.add_argument("--collector", default=client_default, help="collector address")
    p.add_argument("--replay", default=None, help="replay a recorded event stream instead of connecting")
    p.add_argument("--record", default=None, help="also write the live event stream to this file")
    p.set_defaults(func=cmd_tui)

    p = sub.add_parser("demo", help="lab + collector + agents, then the TUI (or an RTT report without a terminal)")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--keep", action="store_true", help="leave the lab running afterwards")
    p.add_argument("--no-tui", action="store_true", help="print the report even on a terminal")
    p.set_defaults(func=cmd_demo)

    # each area adds its own subcommands from its own module (cniscope/cli/<area>.py or <area>_cmd.py)
    import importlib

    for mod in EXTENSIONS:
        importlib.import_module(f"cniscope.cli.{mod}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not getattr(ns, "func", None):
        parser.print_help()
        return 2
    if hasattr(ns, "collector") is False and ns.command in ("nodes", "probe", "tui"):
        ns.collector = default_collector()
    try:
        return int(ns.func(ns) or 0)
    except CniscopeError as exc:
        print(f"cniscope: {exc.title}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        with contextlib.suppress(Exception):
            sys.stdout.close()
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
