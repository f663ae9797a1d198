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
from pathlib import Path
from typing import TYPE_CHECKING

from cniscope.core.errors import LabError, ToolMissing
from cniscope.lab import addressing as addr
from cniscope.lab import netns

if TYPE_CHECKING:
    from cniscope.lab.lab import Lab

DNS_IP = "198.18.0.3"
KUBE_DNS_IP = "198.18.64.2"        # below the range kube-proxy-style Services are planned in
KUBERNETES_IP = "198.18.64.1"      # the "kubernetes" Service's ClusterIP (a name, no endpoints)
ETC_NETNS = Path("/etc/netns")
ROLE = "dns"
NFT_TABLE = "cniscope-dns"


def records(lab: Lab) -> dict[str, str]:
    """Name → address, everything the lab's DNS answers."""
    out = {
        "kubernetes.default.svc.cluster.local": KUBERNETES_IP,
        "kube-dns.kube-system.svc.cluster.local": KUBE_DNS_IP,
        "dns.lab": DNS_IP,
        "collector.lab": addr.COLLECTOR_IP,
    }
    for node in lab.nodes():
        out[f"{node.name}.lab"] = node.host_ip
        for j, pod in enumerate(node.pods, start=1):
            out[f"pod{node.index}-{j}.lab"] = pod["ip"]
    return out


def dnsmasq_argv(binary: str, lab: Lab) -> list[str]:
    argv = [binary, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
            "--no-poll", "--user=nobody", "--pid-file=", "--log-facility=-",
            f"--listen-address={DNS_IP}", "--bind-interfaces", "--port=53", "--cache-size=1000",
            "--local=/lab/", "--local=/cluster.local/", "--domain-needed", "--bogus-priv"]
    argv += [f"--host-record={name},{ip}" for name, ip in sorted(records(lab).items())]
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


def start(lab: Lab, wait: float = 5.0) -> str:
    """Bring up the lab's DNS (idempotent); returns the kube-dns ClusterIP."""
    binary = shutil.which("dnsmasq")
    if binary is None:
        raise ToolMissing("dnsmasq not found (Debian package dnsmasq-base; make setup)")
    fab = lab.fabric
    if DNS_IP not in netns.exec_in(fab, ["ip", "-o", "-4", "addr", "show", "dev", "br0"]):
        netns.batch(fab, [f"addr add {DNS_IP}/24 dev br0"])
    netns.batch(fab, [f"route replace {addr.pod_subnet(n.index)} via {n.host_ip} dev br0" for n in lab.nodes()])
    for node in lab.nodes():
        netns.run(netns.nsenter_argv(node.netns, ["nft", "-f", "-"]), input=nft_rules())
        for pod in node.pods:
            d = ETC_NETNS / pod["netns"]
            d.mkdir(parents=True, exist_ok=True)
            (d / "resolv.conf").write_text(resolv_conf())
    rec = lab.record(ROLE)
    from cniscope.lab import procs

    if rec is None or not procs.alive(rec):
        lab.spawn(ROLE, fab, dnsmasq_argv(binary, lab))
        _wait_ready(lab, wait)
    return KUBE_DNS_IP


def _wait_ready(lab: Lab, wait: float) -> None:
    """Ready once dnsmasq's UDP socket is bound on the DNS address in the fabric."""
    from cniscope.lab import procs

    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        rec = lab.record(ROLE)
        if rec is None or not procs.alive(rec):
            log = Path(rec.log).read_text()[-500:] if rec and Path(rec.log).exists() else ""
            raise LabError(f"dnsmasq exited at start: {log.strip()}")
        if f"{DNS_IP}:53 " in netns.exec_in(lab.fabric, ["ss", "-Hnlu"]):
            return
        time.sleep(0.05)
    raise LabError(f"dnsmasq did not bind {DNS_IP}:53 within {wait:.0f}s")


def remove_files(lab: Lab) -> list[str]:
    removed = []
    for name in lab.namespaces():
        d = ETC_NETNS / name
        if (d / "resolv.conf").exists():
            shutil.rmtree(d, ignore_errors=True)
            removed.append(str(d))
    return removed
