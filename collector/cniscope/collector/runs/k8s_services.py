"""Service scaling in Kubernetes: the :class:`~cniscope.collector.runs.service_backend.ServiceBackend` whose
Services are created through the API (:class:`cniscope.collector.runs.service_scaler.ServiceScaler`).

A step is programmed when the agents see it. Each poll asks every agent for a fresh capability report
and reads what its census counts of the Service data plane (:func:`fingerprint.data_plane_counts`):
kube-proxy's NAT rules, the rules of kube-proxy's nft table, or the entries of Cilium's BPF service
map. The step has settled when the counts have moved away from what they were before the API change
(if the API changed anything) and then read the same on ``stable`` consecutive polls. No count on
any node, or no settling within the timeout, is an error naming each node's counts; a node without
a fresh report is named too.

Every Service carries ``app.kubernetes.io/managed-by=cniscope``: a run first deletes what an earlier
interrupted or crashed run left behind, by that label, and its own at the end, also when cancelled.
The probed Service is the last one created. kube-proxy does not order its chains by creation, so
there is no first-versus-last chain walk here.

kube-proxy's own sync time comes from the same census reads: its /metrics histogram
(``kubeproxy_sync_proxy_rules_duration_seconds``, cumulative sum and count) at the read before the API
change and at the read that settled, so Δsum/Δcount is the mean of the syncs the step caused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cniscope.api.v1 import cluster_pb2
from cniscope.collector.runs import capwait
from cniscope.collector.runs.manager import Stopped
from cniscope.collector.runs.run_fingerprint import data_plane_counts, kube_proxy_sync
from cniscope.collector.runs.service_backend import Applied
from cniscope.collector.runs.service_scaler import ServiceScaler
from cniscope.collector.state import ClusterState
from cniscope.core.errors import Unavailable, ValidationError

T = TypeVar("T")
Counts = dict[str, dict[str, int]]  # node → signal → count
Syncs = dict[str, tuple[float, float] | str]  # node → kube-proxy's cumulative (syncs, seconds), or why none

SETTLE_TIMEOUT = 300.0
SETTLE_POLL = 1.0
SETTLE_STABLE = 2
ENDPOINT_TIMEOUT = 120.0
SIGNALS = (("nat_rules", "NAT rules"), ("nft_rules", "kube-proxy nft rules"),
           ("bpf_service_entries", "BPF service map entries"))


def uses_api(st: cluster_pb2.NodeState) -> bool:
    """An agent whose fingerprint comes from a Kubernetes API server: its node's data plane follows the
    API's Services (a Kubernetes lab's agents too, although their addresses are a lab's)."""
    for u in st.capabilities.units:
        if u.name == "cluster" and u.WhichOneof("detail") == "cluster":
            return u.cluster.fingerprint.source.startswith("kubernetes")
    return False


def figure(counts: dict[str, int]) -> tuple[int, str]:
    """The one count shown for a node, and what it counts."""
    for key, label in SIGNALS:
        if key in counts:
            return counts[key], label
    return 0, ""


def sync_delta(before: Syncs, after: Syncs) -> tuple[dict[str, tuple[float, float]], str]:
    """kube-proxy's syncs between two census reads, per node (Δ syncs, Δ seconds), and why the nodes
    without a figure have none ("" when every node has one)."""
    out: dict[str, tuple[float, float]] = {}
    why: dict[str, list[str]] = {}
    for node in sorted(after):
        a, b = after[node], before.get(node)
        if isinstance(a, str):
            why.setdefault(a, []).append(node)
        elif not isinstance(b, tuple):
            why.setdefault(b or "no census before the step", []).append(node)
        elif a[0] < b[0]:
            why.setdefault("kube-proxy restarted during the step", []).append(node)
        else:
            out[node] = (a[0] - b[0], a[1] - b[1])
    return out, "; ".join(f"{reason} ({', '.join(nodes)})" for reason, nodes in why.items())


def describe(counts: Counts, baseline: Counts) -> str:
    parts = []
    for node in sorted(set(counts) | set(baseline)):
        now, was = counts.get(node, {}), baseline.get(node, {})
        if not now:
            parts.append(f"{node}: no count")
            continue
        v, label = figure(now)
        w = figure(was)[0] if was else None
        parts.append(f"{node}: {label} {v:,}" + (f" (before: {w:,})" if w is not None and w != v else
                                                 " (unchanged)" if w is not None else ""))
    return ", ".join(parts)


@dataclass
class DataPlaneWatch:
    """The agents' view of the Service data plane; runs on the collector's event loop."""

    state: ClusterState
    nodes: list[str]
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    emit: Callable[[str], None] = lambda _m: None
    poll: float = SETTLE_POLL
    stable: int = SETTLE_STABLE
    timeout: float = SETTLE_TIMEOUT
    report_wait: float = capwait.CAPS_WAIT
    syncs: Syncs = field(default_factory=dict)  # kube-proxy's figures in the last read's reports

    async def read(self) -> tuple[Counts, capwait.Refresh]:
        r = await capwait.refresh(self.state, self.nodes, self.report_wait, complete=True)
        fresh = [n for n in self.nodes if n in self.state.nodes and n not in r.late]
        counts = {n: data_plane_counts(self.state.nodes[n].capabilities) for n in fresh}
        self.syncs = {n: kube_proxy_sync(self.state.nodes[n].capabilities) for n in fresh}
        return counts, r

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.cancel.wait(), seconds)
        except TimeoutError:
            return
        raise Stopped

    async def settle(self, baseline: Counts, changed: bool, what: str) -> tuple[Counts, float]:
        """Poll until the counts settle; (counts, seconds waited)."""
        t0 = time.monotonic()
        last: Counts | None = None
        same, moved = 0, not changed
        counts: Counts = {}
        missing = ""
        while True:
            if self.cancel.is_set():
                raise Stopped
            counts, r = await self.read()
            if r.late:
                same, last = 0, None
                missing = capwait.Refresh(late=r.late, slow=r.slow).note(self.report_wait)
            else:
                missing = ""
                if not any(counts.values()):
                    raise Unavailable(
                        f"no agent on {', '.join(self.nodes)} reports a NAT rule count (iptables/nft census) or a "
                        "Cilium BPF service map (eBPF census), so nothing shows when the data plane has programmed "
                        "the Services")
                moved = moved or counts != baseline
                same = same + 1 if counts == last else 1
                last = counts
                if moved and same >= self.stable:
                    return counts, time.monotonic() - t0
            waited = time.monotonic() - t0
            if waited >= self.timeout:
                state = "still changing" if moved else "unchanged since before the change"
                raise Unavailable(f"the data plane did not settle within {self.timeout:g}s after {what} "
                                  f"({state}): {describe(counts, baseline)}" + (f"; {missing}" if missing else ""))
            self.emit(f"kubernetes: waiting for the data plane after {what} ({waited:.0f}s): "
                      f"{describe(counts, baseline)}")
            await self._pause(self.poll)


@dataclass
class KubeServices:
    """The blocking ServiceBackend (called in a worker thread); the census polls run on ``loop``."""

    scaler: ServiceScaler
    watch: DataPlaneWatch
    loop: asyncio.AbstractEventLoop
    run: str = ""
    endpoint_timeout: float = ENDPOINT_TIMEOUT
    name: str = "kubernetes"

    def _on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def _emit(self, message: str) -> None:
        self.loop.call_soon_threadsafe(self.watch.emit, message)

    def _check(self) -> None:
        if self.watch.cancel.is_set():
            raise Stopped

    def prepare(self) -> None:
        """Delete the Services an earlier interrupted or crashed run left, and wait for the data plane."""
        baseline, _ = self._on_loop(self.watch.read())
        removed = self.scaler.delete_all()
        if removed:
            self._emit(f"kubernetes: removed {removed} Services left by an earlier run "
                       f"(label {self.scaler.namespace}/app.kubernetes.io/managed-by=cniscope)")
            self._on_loop(self.watch.settle(baseline, True, f"removing {removed} leftover Services"))

    def apply(self, n: int) -> Applied:
        if n < 1:
            raise ValidationError("a scaling step needs at least one Service")
        self._check()
        baseline, _ = self._on_loop(self.watch.read())
        syncs0 = dict(self.watch.syncs)
        t0 = time.monotonic()
        before = set(self.scaler.list_names())
        names = self.scaler.scale_to(n, self.run)
        self._check()
        target = names[-1]
        self.scaler.wait_ready(target, timeout=self.endpoint_timeout, stop=self.watch.cancel.is_set)
        self._check()
        ip = self.scaler.cluster_ip(target)
        if not ip or ip == "None":
            raise Unavailable(f"service {self.scaler.namespace}/{target} has no ClusterIP")
        counts, _ = self._on_loop(self.watch.settle(baseline, set(names) != before, f"scaling to {n} Services"))
        rules = {node: figure(c)[0] for node, c in counts.items() if c}
        signal = next((figure(c)[1] for c in counts.values() if c), "")
        proxy, note = sync_delta(syncs0, self.watch.syncs)
        return Applied(ip, self.scaler.port, rules, time.monotonic() - t0, "", signal=signal,
                       proxy_sync=proxy, proxy_note=note)

    def cleanup(self) -> None:
        self.scaler.delete_all()
