"""``cniscope lab``: build, inspect, enter and remove the network-namespace lab."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

from cniscope.cli.collector_address import lab_token, use_lab_credentials
from cniscope.core.errors import CniscopeError, ConnectionFailed


def wait_nodes(address: str, count: int, timeout: float) -> None:
    """Until ``count`` agents are connected to the collector at ``address``."""
    from cniscope.client.grpc_collector import list_nodes

    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        try:
            nodes = asyncio.run(list_nodes(address, deadline=2))
            seen = sum(1 for n in nodes if n.status == 1)
            if seen >= count:
                return
        except CniscopeError as exc:  # the collector may still be starting; a refusal will not pass
            if exc.title in ("unauthenticated", "permission denied"):
                raise
        time.sleep(0.3)
    raise ConnectionFailed(f"only {seen} of {count} agents connected to {address} within {timeout:.0f}s; "
                           "see the logs under the lab's state_dir (cniscope lab status)")


def cmd_lab_up(ns: argparse.Namespace) -> int:
    from cniscope.agent.tracers import TRACERS
    from cniscope.lab.lab import Lab, LabSpec

    tracers = [t.strip() for t in ns.tracers.split(",") if t.strip()]
    unknown = [t for t in tracers if t not in TRACERS]
    if unknown:
        raise CniscopeError(f"unknown tracer(s) {', '.join(unknown)}; known: {', '.join(TRACERS.names())}")
    if ns.datapath == "ebpf" and ns.kubernetes:
        raise CniscopeError("--datapath ebpf replaces kube-proxy; a --kubernetes lab runs the real kube-proxy")
    if ns.services and ns.kubernetes:
        raise CniscopeError("--services programs the lab's own Services; a --kubernetes lab's kube-proxy owns them")
    lab = Lab(LabSpec(name=ns.name, nodes=ns.nodes, pods_per_node=ns.pods_per_node))
    lab.up()
    if ns.datapath == "ebpf":
        from cniscope.lab.socklb.ebpf_services import use_ebpf

        use_ebpf(lab)
    if not ns.kubernetes:  # Services fronting the probe pods (the suites' service path), and fillers
        from cniscope.lab import lab_fronts

        lab_fronts.program(lab, "ebpf" if ns.datapath == "ebpf" else lab_fronts.KUBE_PROXY, ns.services)
    cluster_env: dict[str, Any] = {}
    if ns.kubernetes:
        from cniscope.lab.kube.control_plane import KubeLab
        from cniscope.lab.kube.install import LabInstall

        kube = KubeLab(lab)
        kube.up(proxy_mode=ns.proxy_mode)
        install = LabInstall(kube)
        install.apply()
        cluster_env = {"agent_env": install.agent_env, "collector_env": install.collector_env()}
        use_lab_credentials(lab.dir)
    if not ns.bare:
        lab.start_cluster(sample_interval=ns.sample_interval, tracers=tracers, **cluster_env)
        wait_nodes(lab.local_collector, ns.nodes, timeout=ns.wait)
    st = _with_kubernetes(lab)
    if ns.output == "json":
        print(json.dumps(st, indent=2))
    else:
        print(f"lab {st['name']}: {len(st['nodes'])} nodes, collector {st['collector']} "
              f"(from this host: {st['collector_local']})")
        for n in st["nodes"]:
            print(f"  {n['name']:<8} host {n['host_ip']:<14} pod {n['pods'][0]['ip']:<14} netns {n['netns']}")
        if st["kubernetes"]:
            k = st["kubernetes"]
            print(f"  kubernetes {k['kubernetes_version']}: API {k['server']} (inside the lab), "
                  f"kube-proxy {k['proxy_mode']}, admin kubeconfig {k['kubeconfig']}; install from daemonset/ "
                  f"applied ({k.get('install', '')}); try: cniscope lab kubectl get nodes,pods -A")
            if st["operator_token"]:
                print(f"  the collector checks Kubernetes identities; this CLI presents the lab operator's "
                      f"token (cniscope-admin) unless CNISCOPE_TOKEN is set: {st['operator_token']}")
        if not ns.bare:
            print("next: cniscope tui   |   cniscope probe rtt --from node1 --to node2   |   cniscope lab down")
    return 0


def cmd_lab_down(ns: argparse.Namespace) -> int:
    from cniscope.lab.lab import Lab

    removed = Lab.existing(ns.name).down()
    print(f"lab {ns.name}: removed {len(removed)} objects" if removed else f"lab {ns.name}: nothing to remove")
    return 0


def cmd_lab_datapath(ns: argparse.Namespace) -> int:
    from cniscope.lab import lab_fronts
    from cniscope.lab.kube.control_plane import KubeLab
    from cniscope.lab.lab import Lab

    lab = Lab.existing(ns.name)
    if not lab.status()["up"]:
        raise CniscopeError(f"lab {lab.spec.name!r} is not up (cniscope lab up)")
    if KubeLab(lab).status() is not None:
        raise CniscopeError("a --kubernetes lab's Services belong to its kube-proxy")
    rec = lab_fronts.switch(lab, "ebpf" if ns.datapath == "ebpf" else lab_fronts.KUBE_PROXY, ns.services)
    fronts = ", ".join(f"{n} {ip}" for n, ip in rec["fronts"].items())
    print(f"lab {lab.spec.name}: Services on {lab_fronts.DATAPATHS[rec['datapath']]}; probe pods fronted by "
          f"{fronts}; {rec['fillers']:,} filler Services")
    return 0


def _with_kubernetes(lab: Any) -> dict[str, Any]:
    """The lab's status with its Kubernetes control plane (API address, admin kubeconfig) or None."""
    from cniscope.lab.kube.control_plane import KubeLab

    tok = lab_token(lab.dir)
    return {**lab.status(), "kubernetes": KubeLab(lab).status(), "operator_token": str(tok) if tok else None}


def cmd_lab_status(ns: argparse.Namespace) -> int:
    from cniscope.lab.lab import Lab

    print(json.dumps(_with_kubernetes(Lab.existing(ns.name)), indent=2))
    return 0


def cmd_lab_kubectl(ns: argparse.Namespace) -> int:
    from cniscope.lab import netns
    from cniscope.lab.kube.control_plane import KubeLab
    from cniscope.lab.lab import Lab

    lab = Lab.existing(ns.name)
    st = KubeLab(lab).status()
    if st is None:
        raise CniscopeError(f"lab {lab.spec.name!r} runs no Kubernetes (cniscope lab up --kubernetes)")
    argv = ns.argv[1:] if ns.argv and ns.argv[0] == "--" else ns.argv
    os.execvp("nsenter", netns.nsenter_argv(lab.fabric, [st["binary"], "kubectl",
                                                         f"--kubeconfig={st['kubeconfig']}", *argv]))
    return 0  # not reached


def cmd_lab_exec(ns: argparse.Namespace) -> int:
    from cniscope.lab import netns
    from cniscope.lab.lab import Lab

    lab = Lab.existing(ns.name)
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


def register(sub: Any) -> None:
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
    p.add_argument("--kubernetes", action="store_true",
                   help="also run a real control plane (etcd, kube-apiserver, kube-controller-manager, "
                        "kube-scheduler) in the fabric and kube-proxy in every node, apply the install from "
                        "daemonset/ with kubectl apply -k, and have the agents use the API with their "
                        "ServiceAccount tokens (builds core/kube-harness on first use)")
    p.add_argument("--proxy-mode", choices=["iptables", "nftables"], default="iptables",
                   help="kube-proxy mode with --kubernetes (default iptables)")
    p.add_argument("--datapath", choices=["kube-proxy", "ebpf"], default="kube-proxy",
                   help="how pods reach ClusterIPs: kube-proxy-style NAT rules in the node namespaces (default), "
                        "or ebpf: Cilium-style socket load balancing (cgroup connect4/sendmsg4/recvmsg4 programs "
                        "over cilium_lb4_* maps; bench services --backend auto then uses it). Either way each node's "
                        "probe pod is fronted by a Service (ClusterIP 198.18.127.<i>) for the suites' service path")
    p.add_argument("--services", type=int, default=0, metavar="N",
                   help="also program N filler Services into the datapath (0..5000), so the service path crosses "
                        "a datapath holding as many Services as a cluster would")
    p.set_defaults(func=cmd_lab_up)
    p = lsub.add_parser("datapath", help="move a running lab's Services to another datapath (kube-proxy NAT rules "
                                         "or the eBPF socket LB), agents and collector kept, so runs on both "
                                         "compare in one store")
    p.add_argument("datapath", choices=["kube-proxy", "ebpf"])
    p.add_argument("--services", type=int, default=0, metavar="N", help="filler Services to program (0..5000)")
    p.set_defaults(func=cmd_lab_datapath)
    p = lsub.add_parser("down", help="stop the lab's processes and remove every namespace it made")
    p.set_defaults(func=cmd_lab_down)
    p = lsub.add_parser("status", help="print the lab as JSON (its Kubernetes API address and admin kubeconfig "
                                       "under 'kubernetes')")
    p.add_argument("-o", "--output", choices=["json"], default="json")
    p.set_defaults(func=cmd_lab_status)
    p = lsub.add_parser("kubectl", help="kubectl against the lab's API server (admin), run inside the lab")
    p.add_argument("argv", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_lab_kubectl)
    p = lsub.add_parser("exec", help="run a command inside a lab namespace: fabric, NODE or NODE-pod")
    p.add_argument("where")
    p.add_argument("argv", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_lab_exec)
    for lp in lsub.choices.values():
        lp.add_argument("--name", default="cniscope", help="lab name (default cniscope)")
