"""``cniscope tui`` (live, or a recording with ``--replay``) and ``cniscope demo`` (a lab, its
collector and agents, then the TUI — or an RTT matrix and one probe suite without a terminal)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from cniscope.cli.collector_address import collector_of, use_lab_credentials
from cniscope.cli.lab_cmd import wait_nodes


def cmd_tui(ns: argparse.Namespace) -> int:
    from cniscope.client.client_protocol import ClusterClient
    from cniscope.client.grpc_collector import CollectorClient
    from cniscope.client.replay_collector import ReplayClient
    from cniscope.tui.app import run_tui

    client: ClusterClient = ReplayClient(ns.replay) if ns.replay else CollectorClient(collector_of(ns),
                                                                                      record=ns.record)
    return run_tui(client)


def cmd_demo(ns: argparse.Namespace) -> int:
    from cniscope.lab.lab import Lab, LabSpec

    lab = Lab(LabSpec(name="cniscope", nodes=ns.nodes))
    print(f"cniscope demo: building a {ns.nodes}-node lab (network namespaces, 198.18.0.0/15)…", flush=True)
    lab.up()
    try:
        lab.start_cluster(sample_interval=1.0, **(_kubernetes(lab) if ns.kubernetes else {}))
        wait_nodes(lab.local_collector, ns.nodes, timeout=90 if ns.kubernetes else 30)
        print(f"collector + {ns.nodes} agents up; collector at {lab.local_collector}", flush=True)
        if sys.stdout.isatty() and not ns.no_tui:
            cmd_tui(argparse.Namespace(collector=lab.local_collector, replay=None, record=None))
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


def _kubernetes(lab: Any) -> dict[str, Any]:
    """The Kubernetes lab under the demo: control plane, kube-proxy, the install from daemonset/; the
    agents' API environment for ``start_cluster``."""
    from cniscope.lab.kube.control_plane import KubeLab
    from cniscope.lab.kube.install import LabInstall

    print("Kubernetes: etcd, kube-apiserver, controller manager, scheduler, kube-proxy per node; "
          "applying daemonset/ (builds core/kube-harness on first use)…", flush=True)
    kube = KubeLab(lab)
    kube.up()
    install = LabInstall(kube)
    install.apply()
    use_lab_credentials(lab.dir)
    print(kube.kubectl("get", "nodes,pods", "-A", "-o", "wide"), flush=True)
    return {"agent_env": install.agent_env, "collector_env": install.collector_env()}


async def _demo_report(address: str, nodes: list[str]) -> None:
    from cniscope.api.v1 import common_pb2
    from cniscope.client.grpc_collector import CollectorClient
    from cniscope.core.errors import CniscopeError
    from cniscope.core.render import demo_suite_table, rtt_matrix

    async with CollectorClient(address) as client:
        results = {}
        for path in ("host", "pod"):
            for a in nodes:
                for b in nodes:
                    if a == b:
                        continue
                    req = common_pb2.ProbeRequest(kind="rtt", source_node=a, target_node=b, path=path,
                                                  params={"count": "20", "interval": "0.05"})
                    results[(path, a, b)] = await client.probe_result(req)
        print(rtt_matrix(nodes, results))
        if len(nodes) < 2:
            return
        # one pass of the rest of the suite between the first two nodes, pod to pod
        suite = [
            ("tcp", {"duration": "3"}), ("udp", {"duration": "3", "rate_mbps": "50"}),
            ("connect", {"count": "200"}), ("http", {"duration": "3", "qps": "200"}),
        ]
        rows = []
        for kind, params in suite:
            req = common_pb2.ProbeRequest(kind=kind, source_node=nodes[0], target_node=nodes[1], path="pod",
                                          params=params)
            try:
                rows.append(await client.probe_result(req))
            except CniscopeError as exc:  # one probe's failure is a row, not the end of the demo
                rows.append(common_pb2.ProbeResult(kind=kind, ok=False, error=str(exc)))
    print()
    print(f"probe suite, {nodes[0]} pod → {nodes[1]} pod")
    print(demo_suite_table(rows))


def register(sub: Any) -> None:
    p = sub.add_parser("tui", help="the live terminal UI")
    p.add_argument("--collector", default=None, help="collector address")
    p.add_argument("--replay", default=None, help="replay a recorded event stream instead of connecting")
    p.add_argument("--record", default=None, help="also write the live event stream to this file")
    p.set_defaults(func=cmd_tui)

    p = sub.add_parser("demo", help="lab + collector + agents, then the TUI (or an RTT report without a terminal)")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--keep", action="store_true", help="leave the lab running afterwards")
    p.add_argument("--no-tui", action="store_true", help="print the report even on a terminal")
    p.add_argument("--kubernetes", action="store_true",
                   help="the lab with a real control plane and kube-proxy, the install from daemonset/ applied "
                        "(as lab up --kubernetes; make demo KUBERNETES=1)")
    p.set_defaults(func=cmd_demo)
