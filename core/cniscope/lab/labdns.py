"""The lab's DNS: a real dnsmasq answering for the lab's names, reachable through a kube-dns-like
ClusterIP.

* dnsmasq runs in the fabric namespace on an extra bridge address (``DNS_IP``), started through
  ``Lab.spawn`` so ``lab down`` stops it by PID. It answers ``nodeI.lab``, ``podI-J.lab``,
  ``kubernetes.default.svc.cluster.local`` and ``kube-dns.kube-system.svc.cluster.local``; any
  other name under ``lab``/``cluster.local`` is NXDOMAIN, and nothing is forwarded anywhere.
* The fabric gets routes back to the pod subnets so pods can reach it.
* Every node namespace gets an nftables table ``cniscope-dns`` that DNATs the kube-dns ClusterIP
  (``KUBE_DNS_IP``:53, UDP and TCP) to dnsmasq — a table of its own, so loading or flushing
  kube-proxy's nat table leaves it alone.
* Every pod namespace gets ``/etc/netns/<ns>/resolv.conf`` (the iproute2 convention) naming the
  ClusterIP, with Kubernetes-style search domains; ``remove_files`` deletes them.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from cniscope.core.errors import LabError, ToolMissing
from cniscope.lab import addressing as addr
from cniscope.lab import netns, procs
from cniscope.lab.lab_node import LabNode

DNS_IP = "198.18.0.3"
KUBE_DNS_IP = "198.18.64.2"        # below the range kube-proxy-style Services are planned in
KUBERNETES_IP = "198.18.64.1"      # the "kubernetes" Service's ClusterIP (a name, no endpoints)
ETC_NETNS = Path("/etc/netns")
ROLE = "dns"
NFT_TABLE = "cniscope-dns"


def records(nodes: Sequence[LabNode]) -> dict[str, str]:
    """Name → address, everything the lab's DNS answers."""
    out = {
        "kubernetes.default.svc.cluster.local": KUBERNETES_IP,
        "kube-dns.kube-system.svc.cluster.local": KUBE_DNS_IP,
        "dns.lab": DNS_IP,
        "collector.lab": addr.COLLECTOR_IP,
    }
    for node in nodes:
        out[f"{node.name}.lab"] = node.host_ip
        for j, pod in enumerate(node.pods, start=1):
            out[f"pod{node.index}-{j}.lab"] = pod["ip"]
    return out


def dnsmasq_argv(binary: str, nodes: Sequence[LabNode]) -> list[str]:
    argv = [binary, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
            "--no-poll", "--user=nobody", "--pid-file=", "--log-facility=-",
            f"--listen-address={DNS_IP}", "--bind-interfaces", "--port=53", "--cache-size=1000",
            "--local=/lab/", "--local=/cluster.local/", "--domain-needed", "--bogus-priv"]
    argv += [f"--host-record={name},{ip}" for name, ip in sorted(records(nodes).items())]
    return argv


def resolv_conf() -> str:
    return (f"nameserver {KUBE_DNS_IP}\n"
            "search default.svc.cluster.local svc.cluster.local cluster.local lab\n"
            "options ndots:5\n")


def nft_rules() -> str:
    rules = []
    for hook, prio in (("prerouting", -100), ("output", -100)):
        rules.append(f"add chain ip {NFT_TABLE} {hook} {{ type nat hook {hook} priority {prio}; }}")
        for proto in ("udp", "tcp"):
            rules.append(f"add rule ip {NFT_TABLE} {hook} ip daddr {KUBE_DNS_IP} {proto} dport 53 "
                         f"dnat to {DNS_IP}:53")
    return "\n".join([f"add table ip {NFT_TABLE}", f"flush table ip {NFT_TABLE}", *rules, ""])


def dnsmasq_binary() -> str:
    binary = shutil.which("dnsmasq")
    if binary is None:
        raise ToolMissing("dnsmasq not found (Debian package dnsmasq-base; make setup)")
    return binary


def configure(fabric: str, nodes: Sequence[LabNode]) -> None:
    """The DNS address on the fabric bridge with routes back to the pods, the kube-dns DNAT table in
    every node namespace and resolv.conf for every pod (idempotent)."""
    if DNS_IP not in netns.exec_in(fabric, ["ip", "-o", "-4", "addr", "show", "dev", "br0"]):
        netns.batch(fabric, [f"addr add {DNS_IP}/24 dev br0"])
    netns.batch(fabric, [f"route replace {addr.pod_subnet(n.index)} via {n.host_ip} dev br0" for n in nodes])
    for node in nodes:
        netns.run(netns.nsenter_argv(node.netns, ["nft", "-f", "-"]), input=nft_rules())
        for pod in node.pods:
            d = ETC_NETNS / pod["netns"]
            d.mkdir(parents=True, exist_ok=True)
            (d / "resolv.conf").write_text(resolv_conf())


def wait_ready(fabric: str, record: Callable[[], procs.ProcRecord | None], wait: float) -> None:
    """Ready once dnsmasq's UDP socket is bound on the DNS address in the fabric; ``record`` reads
    dnsmasq's process record (it may have exited)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        rec = record()
        if rec is None or not procs.alive(rec):
            log = Path(rec.log).read_text()[-500:] if rec and Path(rec.log).exists() else ""
            raise LabError(f"dnsmasq exited at start: {log.strip()}")
        if f"{DNS_IP}:53 " in netns.exec_in(fabric, ["ss", "-Hnlu"]):
            return
        time.sleep(0.05)
    raise LabError(f"dnsmasq did not bind {DNS_IP}:53 within {wait:.0f}s")


def remove_files(namespaces: Iterable[str]) -> list[str]:
    removed = []
    for name in namespaces:
        d = ETC_NETNS / name
        if (d / "resolv.conf").exists():
            shutil.rmtree(d, ignore_errors=True)
            removed.append(str(d))
    return removed
