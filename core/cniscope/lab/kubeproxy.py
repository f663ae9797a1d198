"""kube-proxy-shaped Service rules for the lab: iptables mode and nftables (verdict-map) mode.

The iptables layout is kube-proxy's iptables mode for ClusterIP Services without ``--cluster-cidr``
(no masquerade rule in the KUBE-SVC chain):

    8 fixed NAT rules   PREROUTING/OUTPUT -> KUBE-SERVICES, POSTROUTING -> KUBE-POSTROUTING,
                        KUBE-MARK-MASQ (1), KUBE-POSTROUTING (3), KUBE-SERVICES -> KUBE-NODEPORTS (1)
    10 rules / Service  KUBE-SERVICES match (1), KUBE-SVC-* random split (3),
                        3 x KUBE-SEP-* (hairpin mark + DNAT = 2 each)

so N Services with 3 endpoints each load exactly ``8 + 10*N`` NAT rules (4 -> 48, 104 -> 1,048,
1000 -> 10,008) in ``4 + 4*N`` user chains. The nftables variant follows kube-proxy's nftables mode:
one ``service-ips`` verdict map (ClusterIP . proto . port -> goto service chain), a ``numgen`` split
per Service and one DNAT chain per endpoint; Services can be added incrementally with
:func:`render_nft_add`. ClusterIPs come from :func:`cniscope.lab.addressing.service_ip`, endpoints are
lab pod IPs, and DNAT really works: a pod connecting to a ClusterIP reaches an endpoint.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from cniscope.lab import netns
from cniscope.lab.addressing import LAB_RANGE, service_ip

Backend = Literal["iptables-nft", "iptables-legacy", "nft"]
BACKENDS: tuple[Backend, ...] = ("iptables-nft", "iptables-legacy", "nft")
FIXED_NAT_RULES = 8
FIXED_USER_CHAINS = ("KUBE-MARK-MASQ", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-SERVICES")
NFT_TABLE = "kube-proxy"
NFT_FIXED_RULES = 9
NAMESPACE = "default"


@dataclass(frozen=True)
class Service:
    index: int
    name: str
    cluster_ip: str
    port: int
    target_port: int
    endpoints: tuple[str, ...]
    protocol: str = "tcp"

    @property
    def port_name(self) -> str:
        """kube-proxy's ServicePortName string, e.g. ``default/svc-0:http``."""
        return f"{NAMESPACE}/{self.name}:http"


@dataclass(frozen=True)
class LoadResult:
    backend: Backend
    netns: str
    services: tuple[Service, ...]
    nat_rules: int
    user_chains: int
    seconds: float


def nat_rule_count(n_services: int, endpoints_per_service: int = 3) -> int:
    """NAT rules the iptables layout has for ``n_services`` (8 + 10*N with 3 endpoints each)."""
    return FIXED_NAT_RULES + n_services * (1 + 3 * endpoints_per_service)


def user_chain_count(n_services: int, endpoints_per_service: int = 3) -> int:
    return len(FIXED_USER_CHAINS) + n_services * (1 + endpoints_per_service)


def nft_rule_count(n_services: int, endpoints_per_service: int = 3) -> int:
    return NFT_FIXED_RULES + n_services * (1 + 2 * endpoints_per_service)


def plan(n_services: int, endpoints: Sequence[str], *, per_service: int = 3, port: int = 80,
         target_port: int = 80, first: int = 0) -> list[Service]:
    """Services ``first .. first+n-1``; each takes ``per_service`` distinct endpoints, rotating."""
    if n_services < 0:
        raise ValueError("n_services must be >= 0")
    pool = list(dict.fromkeys(endpoints))
    if len(pool) < per_service:
        raise ValueError(f"need at least {per_service} distinct endpoint addresses, got {len(pool)}")
    out = []
    for i in range(first, first + n_services):
        eps = tuple(pool[(i + k) % len(pool)] for k in range(per_service))
        out.append(Service(index=i, name=f"svc-{i}", cluster_ip=service_ip(i), port=port,
                           target_port=target_port, endpoints=eps))
    return out


def _hash16(s: str) -> str:
    # kube-proxy: base32(sha256(...))[:16]
    return base64.b32encode(hashlib.sha256(s.encode()).digest()).decode()[:16]


def svc_chain(svc: Service) -> str:
    return "KUBE-SVC-" + _hash16(svc.port_name + svc.protocol)


def sep_chain(svc: Service, ep: str) -> str:
    return "KUBE-SEP-" + _hash16(svc.port_name + svc.protocol + f"{ep}:{svc.target_port}")


# ---- iptables mode ------------------------------------------------------------------------------
def render_iptables(services: Sequence[Service]) -> str:
    """A complete ``*nat`` table in iptables-save/restore syntax."""
    chains = [":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
              ":POSTROUTING ACCEPT [0:0]"]
    chains += [f":{c} - [0:0]" for c in FIXED_USER_CHAINS]
    rules = [
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE --random-fully",
    ]
    svc_rules: list[str] = []
    for svc in services:
        sc = svc_chain(svc)
        chains.append(f":{sc} - [0:0]")
        rules.append(f'-A KUBE-SERVICES -d {svc.cluster_ip}/32 -p {svc.protocol} -m comment --comment '
                     f'"{svc.port_name} cluster IP" -m {svc.protocol} --dport {svc.port} -j {sc}')
        n = len(svc.endpoints)
        for k, ep in enumerate(svc.endpoints):
            sep = sep_chain(svc, ep)
            chains.append(f":{sep} - [0:0]")
            dest = f"{ep}:{svc.target_port}"
            split = ""
            if k < n - 1:
                split = f" -m statistic --mode random --probability {1.0 / (n - k):.11f}"
            svc_rules.append(f'-A {sc} -m comment --comment "{svc.port_name} -> {dest}"{split} -j {sep}')
            svc_rules.append(f"-A {sep} -s {ep}/32 -m comment --comment {svc.port_name} -j KUBE-MARK-MASQ")
            svc_rules.append(f"-A {sep} -p {svc.protocol} -m comment --comment {svc.port_name} "
                             f"-m {svc.protocol} -j DNAT --to-destination {dest}")
    rules.append('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be '
                 'the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS')
    return "\n".join(["*nat", *chains, *rules, *svc_rules, "COMMIT", ""])


# ---- nftables mode ------------------------------------------------------------------------------
def nft_service_chain(svc: Service) -> str:
    return f"service-{_hash16(svc.port_name + svc.protocol)[:8]}-{NAMESPACE}/{svc.name}/{svc.protocol}/http"


def nft_endpoint_chain(svc: Service, ep: str) -> str:
    h = _hash16(svc.port_name + svc.protocol + f"{ep}:{svc.target_port}")[:8]
    return f"endpoint-{h}-{NAMESPACE}/{svc.name}/{svc.protocol}/http__{ep}/{svc.target_port}"


def render_nft_base() -> str:
    t = f"ip {NFT_TABLE}"
    return "\n".join([
        f'add table {t} {{ comment "rules for kube-proxy" ; }}',
        f"add chain {t} mark-for-masquerade",
        f"add rule {t} mark-for-masquerade mark set mark or 0x4000",
        f"add chain {t} masquerading",
        f"add rule {t} masquerading mark and 0x4000 == 0 return",
        f"add rule {t} masquerading mark set mark xor 0x4000",
        f"add rule {t} masquerading masquerade fully-random",
        f"add map {t} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}",
        f"add chain {t} nodeports",
        f"add chain {t} services",
        f"add rule {t} services ip daddr . meta l4proto . th dport vmap @service-ips",
        f"add rule {t} services fib daddr type local jump nodeports",
        f"add chain {t} nat-prerouting {{ type nat hook prerouting priority -100 ; policy accept ; }}",
        f"add rule {t} nat-prerouting jump services",
        f"add chain {t} nat-output {{ type nat hook output priority -100 ; policy accept ; }}",
        f"add rule {t} nat-output jump services",
        f"add chain {t} nat-postrouting {{ type nat hook postrouting priority 100 ; policy accept ; }}",
        f"add rule {t} nat-postrouting jump masquerading",
        "",
    ])


def render_nft_add(services: Sequence[Service]) -> str:
    """Commands adding ``services`` to an existing kube-proxy table (one nft transaction)."""
    t = f"ip {NFT_TABLE}"
    out: list[str] = []
    elems: list[str] = []
    for svc in services:
        eps = [(ep, nft_endpoint_chain(svc, ep)) for ep in svc.endpoints]
        for ep, ec in eps:
            out.append(f"add chain {t} {ec}")
            out.append(f"add rule {t} {ec} ip saddr {ep} jump mark-for-masquerade")
            out.append(f"add rule {t} {ec} meta l4proto {svc.protocol} dnat to {ep}:{svc.target_port}")
        sc = nft_service_chain(svc)
        out.append(f"add chain {t} {sc}")
        vm = ", ".join(f"{k} : goto {ec}" for k, (_, ec) in enumerate(eps))
        out.append(f"add rule {t} {sc} numgen random mod {len(eps)} vmap {{ {vm} }}")
        elems.append(f"{svc.cluster_ip} . {svc.protocol} . {svc.port} : goto {sc}")
    for i in range(0, len(elems), 500):
        out.append(f"add element {t} service-ips {{ {', '.join(elems[i:i + 500])} }}")
    out.append("")
    return "\n".join(out)


def render_nft(services: Sequence[Service]) -> str:
    """The whole kube-proxy nftables table for ``services``."""
    return render_nft_base() + render_nft_add(services)


# ---- loading into a lab namespace ---------------------------------------------------------------
def _restore_bin(backend: Backend) -> str:
    return {"iptables-nft": "iptables-nft-restore", "iptables-legacy": "iptables-legacy-restore"}[backend]


def _check_lab(services: Sequence[Service]) -> None:
    import ipaddress

    for svc in services:
        for a in (svc.cluster_ip, *svc.endpoints):
            if ipaddress.ip_address(a) not in LAB_RANGE:
                raise ValueError(f"{a} is outside the lab range {LAB_RANGE}")


def load(ns: str, services: Sequence[Service] | int, backend: Backend = "iptables-nft", *,
         endpoints: Sequence[str] = (), timeout: float = 120) -> LoadResult:
    """Replace kube-proxy's rules in namespace ``ns`` with ``services`` (or N planned from
    ``endpoints``). iptables backends replace the whole nat table; nft replaces the kube-proxy table."""
    svcs = plan(services, endpoints) if isinstance(services, int) else list(services)
    _check_lab(svcs)
    t0 = time.perf_counter()
    if backend == "nft":
        flush(ns, "nft")
        netns.run(netns.nsenter_argv(ns, ["nft", "-f", "-"]), input=render_nft(svcs), timeout=timeout)
        rules = nft_rule_count(len(svcs), len(svcs[0].endpoints) if svcs else 3)
    elif backend in ("iptables-nft", "iptables-legacy"):
        netns.run(netns.nsenter_argv(ns, [_restore_bin(backend), "-w", "5"]), input=render_iptables(svcs),
                  timeout=timeout)
        rules = FIXED_NAT_RULES + sum(1 + 3 * len(s.endpoints) for s in svcs)
    else:
        raise ValueError(f"unknown backend {backend!r}; one of {', '.join(BACKENDS)}")
    chains = len(FIXED_USER_CHAINS) + sum(1 + len(s.endpoints) for s in svcs)
    return LoadResult(backend=backend, netns=ns, services=tuple(svcs), nat_rules=rules, user_chains=chains,
                      seconds=time.perf_counter() - t0)


def add_nft(ns: str, services: Sequence[Service], *, timeout: float = 120) -> None:
    """Add Services to an already loaded nftables kube-proxy table (incremental sync)."""
    _check_lab(services)
    netns.run(netns.nsenter_argv(ns, ["nft", "-f", "-"]), input=render_nft_add(services), timeout=timeout)


def flush(ns: str, backend: Backend = "iptables-nft") -> None:
    """Remove what :func:`load` put into ``ns`` for ``backend``; a no-op when nothing is loaded."""
    if backend == "nft":
        out = netns.run(netns.nsenter_argv(ns, ["nft", "list", "tables"]), check=False)
        if f"table ip {NFT_TABLE}" in out.splitlines():
            netns.run(netns.nsenter_argv(ns, ["nft", "delete", "table", "ip", NFT_TABLE]))
    elif backend in ("iptables-nft", "iptables-legacy"):
        empty = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n" \
                ":POSTROUTING ACCEPT [0:0]\nCOMMIT\n"
        netns.run(netns.nsenter_argv(ns, [_restore_bin(backend), "-w", "5"]), input=empty)
    else:
        raise ValueError(f"unknown backend {backend!r}; one of {', '.join(BACKENDS)}")
