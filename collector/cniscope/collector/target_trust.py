"""Where probes may go, from what the collector knows by itself — never from what an agent announces.

An agent's Hello names its host and probe-pod addresses; anyone holding an agent credential can say
anything there. An announced address becomes a probe target (in the peer table the agents probe
from, or as an explicit RunProbe target) only when the collector can vouch for it:

- it lies inside the collector's allow-list (``CNISCOPE_ALLOW_CIDRS``; by default the lab's range), or
- in Kubernetes, it is that node's address on its Node object (``status.addresses``), inside that
  node's ``spec.podCIDRs``, or the IP of the probe pod scheduled on that node — read by the collector
  from the API server itself, every ``REFRESH_SECONDS`` and soon after an unknown node connects.

The capability reports agents send (their own discovered allow-lists) are not trusted for this.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from cniscope.core import cluster_cidrs, netpolicy
from cniscope.core.errors import CniscopeError, ForbiddenTarget

log = logging.getLogger("cniscope.collector.targets")

REFRESH_SECONDS = 30.0
SOON_SECONDS = 3.0           # an unknown node asks for a refresh at most this often

Net = ipaddress.IPv4Network | ipaddress.IPv6Network
Objects = tuple[Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]]]   # (Node objects, probe Pods)


def per_node(nodes: Sequence[Mapping[str, Any]], pods: Sequence[Mapping[str, Any]]) -> dict[str, list[Net]]:
    """Node name → the networks its own objects vouch for (addresses, pod CIDRs, its probe pod)."""
    out: dict[str, list[Net]] = {}
    for n in nodes:
        name = str(n.get("metadata", {}).get("name", ""))
        if name:
            out.setdefault(name, []).extend(cluster_cidrs.node_addresses([n]) + cluster_cidrs.node_pod_cidrs([n]))
    for p in pods:
        node = str(p.get("spec", {}).get("nodeName", ""))
        for ip in p.get("status", {}).get("podIPs", []) or [{"ip": p.get("status", {}).get("podIP", "")}]:
            try:
                addr = ipaddress.ip_address(str(ip.get("ip", "")))
            except ValueError:
                continue
            if node:
                out.setdefault(node, []).append(ipaddress.ip_network(addr))
    return out


class TargetTrust:
    """``fetch`` reads (Node objects, probe pods) from the API server, blocking; None: no API here."""

    def __init__(self, allow_cidrs: str, fetch: Callable[[], Objects] | None = None,
                 on_change: Callable[[], None] | None = None) -> None:
        self.allow_cidrs = allow_cidrs
        self.allow = netpolicy.parse_cidrs(allow_cidrs)
        self.fetch = fetch
        self.on_change = on_change
        self.known: dict[str, list[Net]] = {}
        self.error = ""
        self._soon = asyncio.Event()
        self._last_soon = 0.0
        self._memo: dict[tuple[str, str], bool] = {}   # the peer table asks about every node often

    def vouched(self, node: str, address: str) -> bool:
        """The collector itself knows ``address`` to be ``node``'s (or allowed for anyone)."""
        got = self._memo.get((node, address))
        if got is None:
            if len(self._memo) > 100_000:
                self._memo.clear()
            got = self._memo[(node, address)] = self._vouched(node, address)
        return got

    def _vouched(self, node: str, address: str) -> bool:
        try:
            ip = netpolicy.parse_address(address) if address else None
        except CniscopeError:
            return False
        if ip is None or netpolicy.forbidden_reason(ip):
            return False
        nets: Iterable[Net] = [*self.allow, *self.known.get(node, ())]
        return any(ip.version == n.version and ip in n for n in nets)

    def addresses(self) -> list[str]:
        """Every address the collector vouches for by name (for explicit targets beside the allow-list)."""
        return [str(n.network_address) for nets in self.known.values() for n in nets if n.num_addresses == 1]

    def allow_spec(self) -> str:
        """The allow-list for explicit targets: the configured CIDRs and the nodes' own networks."""
        extra = [str(n) for nets in self.known.values() for n in nets if n.num_addresses > 1]
        return ",".join(dict.fromkeys([*(str(n) for n in self.allow), *extra]))

    def check_address(self, what: str, node: str, address: str) -> None:
        """Refuse a node's announced address the collector cannot vouch for."""
        if not self.vouched(node, address):
            raise ForbiddenTarget(
                f"{what} {address} of node {node} was announced by its agent, and the collector does not "
                f"know it: it is outside the allow-list ({self.allow_cidrs or 'empty'})"
                + (" and not on the node's own objects" if self.fetch is not None else "")
                + "; set CNISCOPE_ALLOW_CIDRS on the collector to allow it")

    def unknown_node(self, node: str) -> None:
        """A node the API view does not hold yet connected: refresh soon."""
        if self.fetch is not None and node not in self.known and time.monotonic() - self._last_soon > SOON_SECONDS:
            self._last_soon = time.monotonic()
            self._soon.set()

    async def refresh(self) -> None:
        if self.fetch is None:
            return
        try:
            nodes, pods = await asyncio.to_thread(self.fetch)
        except CniscopeError as exc:
            if str(exc) != self.error:
                log.warning("probe targets: cannot read Node objects (%s); keeping what was known", exc)
            self.error = str(exc)
            return
        self.error = ""
        known = per_node(nodes, pods)
        if known != self.known:
            self.known = known
            self._memo.clear()
            if self.on_change is not None:
                self.on_change()

    async def loop(self) -> None:
        while True:
            await self.refresh()
            self._soon.clear()
            try:
                await asyncio.wait_for(self._soon.wait(), REFRESH_SECONDS)
            except TimeoutError:
                pass


def kubernetes_fetch(probe_namespace: str, probe_selector: str,
                     env: Mapping[str, str] | None = None) -> Callable[[], Objects]:
    """Read Node objects and the probe pods through the collector's own API credentials (RBAC:
    daemonset/base/rbac-collector.yaml)."""
    from cniscope.core import kubeapi

    api: list[Any] = []

    def fetch() -> Objects:
        if not api:
            conn = kubeapi.api_client(env)  # Unavailable without the kubernetes package or a configuration
            from kubernetes import client

            api.append(client.CoreV1Api(conn))
        core = api[0]
        nodes = kubeapi.call(core.list_node, what="list Node objects") or {}
        pods = kubeapi.call(core.list_namespaced_pod, probe_namespace, label_selector=probe_selector,
                            what=f"list probe pods in {probe_namespace}") or {}
        return list(nodes.get("items", [])), list(pods.get("items", []))

    return fetch
