"""Service scaling: N Services per step, then NAT rule counts and pod→Service connect setup.

Where the Services come from is a :class:`ServiceBackend`. In the lab, :class:`LabServices` writes
kube-proxy's iptables-mode ruleset (iptables-nft or iptables-legacy, full restore per step, as
kube-proxy syncs) or its nftables verdict-map table (loaded incrementally) into **every** node
namespace, so traffic from a pod to a ClusterIP really walks the rules. In Kubernetes the Services are
created through the API by :class:`cniscope.collector.runs.k8s_services.KubeServices`, which waits
until the agents' census shows the data plane programmed. ``auto`` picks the lab's iptables-nft
when the connected agents are lab namespaces, Kubernetes otherwise (the collector must reach an API
server); a lab backend outside the lab or Kubernetes inside it is refused.

The probed Service is the last one created: the last rule of KUBE-SERVICES, the worst case of the
linear chain walk, and an ordinary lookup for the verdict map.

Beside the userspace probe each step records the same connects as the source node's in-kernel
tracer saw them (:mod:`.kernel_setup`; a note where the tracer is not running), kube-proxy's own
sync time (Kubernetes only; :mod:`.k8s_services`) and the CNI agents' CPU and RSS while the step was
loaded and settled and while it was measured (:mod:`.footprint`).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from cniscope.api.v1 import common_pb2, runs_pb2
from cniscope.collector.dispatcher import Dispatcher
from cniscope.collector.runs import footprint_figures, kernel_setup
from cniscope.collector.runs import run_store as rstore
from cniscope.collector.runs.kernel_setup import KernelSetup, KernelWatch
from cniscope.collector.runs.manager import ActiveRun, RunManager, run_probe
from cniscope.collector.state import ClusterState
from cniscope.core import benchmetrics as bm
from cniscope.core import stats
from cniscope.core.errors import Unavailable, ValidationError

if TYPE_CHECKING:
    from cniscope.collector.runs.service_scaler import ServiceScaler
    from cniscope.lab.lab import Lab

MAX_SERVICES = 5000
LAB_PROXY_NOTE = "does not apply: no kube-proxy in the lab (cniscope loads its ruleset; see the load time)"
DEFAULT_CONNECTS = 200
SERVICE_PORT = 7411  # the agents' accept-and-close port: the endpoints really answer


@dataclass(frozen=True)
class Applied:
    target_ip: str               # the last Service: the end of a linear chain
    target_port: int
    rules: dict[str, int]        # NAT rules per node, counted from the kernel after loading
    sync_seconds: float          # slowest node's load
    first_ip: str = ""           # the first Service: the head of a linear chain
    signal: str = "NAT rules"    # what ``rules`` counts
    # kube-proxy's own syncs during the step, per node: (Δ syncs, Δ seconds syncing), from its /metrics
    proxy_sync: dict[str, tuple[float, float]] = field(default_factory=dict)
    proxy_note: str = ""         # why a node has no kube-proxy figure


class ServiceBackend(Protocol):
    name: str

    def prepare(self) -> None:
        """Remove what an earlier interrupted or crashed run left behind (blocking)."""
        ...

    def apply(self, n: int) -> Applied:
        """Make exactly ``n`` Services exist and the data plane programmed on every node (blocking)."""
        ...

    def cleanup(self) -> None:
        """Remove every Service and rule this backend created (blocking, idempotent)."""
        ...


@dataclass
class LabServices:
    """kube-proxy-shaped rules in every node namespace of a lab."""

    node_netns: list[str]
    endpoints: list[str]
    backend: str = "iptables-nft"
    name: str = field(init=False)
    _loaded: int = 0

    def __post_init__(self) -> None:
        from cniscope.lab import kubeproxy

        if self.backend not in kubeproxy.BACKENDS:
            raise ValidationError(f"backend must be one of {', '.join(kubeproxy.BACKENDS)}, got {self.backend!r}")
        self.name = self.backend

    def _plan(self, n: int, first: int = 0) -> list[object]:
        from cniscope.lab import kubeproxy

        return list(kubeproxy.plan(n, self.endpoints, port=SERVICE_PORT, target_port=SERVICE_PORT, first=first))

    def prepare(self) -> None:
        self.cleanup()

    def apply(self, n: int) -> Applied:
        from cniscope.lab import kubeproxy

        if n < 1:
            raise ValidationError("a scaling step needs at least one Service")
        slowest = 0.0
        for ns in self.node_netns:
            t0 = time.perf_counter()
            if self.backend == "nft" and 0 < self._loaded < n:
                kubeproxy.add_nft(ns, kubeproxy.plan(n - self._loaded, self.endpoints, port=SERVICE_PORT,
                                                     target_port=SERVICE_PORT, first=self._loaded))
            else:
                kubeproxy.load(ns, kubeproxy.plan(n, self.endpoints, port=SERVICE_PORT, target_port=SERVICE_PORT),
                               self.backend)  # type: ignore[arg-type]
            slowest = max(slowest, time.perf_counter() - t0)
        self._loaded = n
        last = kubeproxy.plan(1, self.endpoints, port=SERVICE_PORT, target_port=SERVICE_PORT, first=n - 1)[0]
        head = kubeproxy.plan(1, self.endpoints, port=SERVICE_PORT, target_port=SERVICE_PORT)[0]
        return Applied(last.cluster_ip, SERVICE_PORT, {ns: count_rules(ns, self.backend) for ns in self.node_netns},
                       slowest, head.cluster_ip, proxy_note=LAB_PROXY_NOTE)

    def cleanup(self) -> None:
        from cniscope.lab import kubeproxy

        for ns in self.node_netns:
            try:
                kubeproxy.flush(ns, self.backend)  # type: ignore[arg-type]
            except Exception:  # a node namespace already gone has nothing left to clean
                continue
        self._loaded = 0


def count_rules(ns: str, backend: str) -> int:
    """NAT rules as the kernel holds them: ``-A`` lines of the nat table, or rules of kube-proxy's
    nft table."""
    from cniscope.lab import netns

    if backend == "nft":
        out = netns.run(netns.nsenter_argv(ns, ["nft", "-j", "list", "table", "ip", "kube-proxy"]))
        return sum(1 for o in json.loads(out).get("nftables", []) if "rule" in o)
    tool = {"iptables-nft": "iptables-nft-save", "iptables-legacy": "iptables-legacy-save"}[backend]
    out = netns.run(netns.nsenter_argv(ns, [tool, "-t", "nat"]))
    return sum(1 for line in out.splitlines() if line.startswith("-A "))


def lab_backend(lab_name: str, backend: str) -> LabServices:
    from cniscope.lab.lab import Lab, LabSpec

    lab = _existing_lab(lab_name) if lab_name is not None else Lab(LabSpec())
    nodes = lab.nodes()
    eps = [p["ip"] for n in nodes for p in n.pods]
    return LabServices([n.netns for n in nodes], eps, backend)


def _existing_lab(name: str) -> Lab:
    from cniscope.lab.lab import STATE_ROOT, Lab, LabSpec

    try:
        spec = json.loads((STATE_ROOT / (name or "cniscope") / "state.json").read_text())["spec"]
        return Lab(LabSpec(name=name or "cniscope", nodes=spec["nodes"], pods_per_node=spec["pods_per_node"]))
    except (OSError, ValueError, KeyError):
        return Lab(LabSpec(name=name or "cniscope"))


KUBERNETES = "kubernetes"
LAB_BACKENDS = ("iptables-nft", "iptables-legacy", "nft")


def resolve_backends(req: runs_pb2.ServiceScalingRequest, in_lab: bool) -> list[str]:
    """The backends a request names, ``auto`` resolved: the lab's iptables-nft when the agents are lab
    namespaces, Kubernetes otherwise."""
    wanted = list(req.backends) or [req.backend or "auto"]
    out = []
    for b in wanted:
        if b == "auto":
            out.append("iptables-nft" if in_lab else KUBERNETES)
        elif b in LAB_BACKENDS:
            if not in_lab:
                raise Unavailable(f"backend {b} writes kube-proxy rules into lab namespaces, but the connected "
                                  f"agents are not a lab; use --backend {KUBERNETES} (or auto)")
            out.append(b)
        elif b in (KUBERNETES, "k8s"):
            if in_lab:
                raise Unavailable(f"backend {KUBERNETES} creates Services through the API, but the connected agents "
                                  "are lab namespaces whose data plane never sees them; use auto or "
                                  f"{', '.join(LAB_BACKENDS)}")
            out.append(KUBERNETES)
        else:
            raise ValidationError(f"backend must be one of auto, {KUBERNETES}, {', '.join(LAB_BACKENDS)}; got {b!r}")
    return list(dict.fromkeys(out))


def scaler_from_env() -> ServiceScaler:
    """The collector's ServiceScaler: CNISCOPE_SCALING_NAMESPACE, $KUBECONFIG or the pod's service account."""
    from cniscope.collector.runs.service_scaler import ServiceScaler
    from cniscope.core import config

    return ServiceScaler.from_config(config.load(config.CollectorConfig))


def slope_ns_per_rule(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of setup time (µs) over rule count, in ns per rule."""
    if len(points) < 2:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = stats.mean(xs), stats.mean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx * 1000.0


_SAFE = re.compile(r"[^a-z0-9]+")


def metric_prefix(backend: str) -> str:
    return _SAFE.sub("_", backend.lower()).strip("_")


@dataclass
class _Step:
    """What one N measured over the repetitions."""

    applied: Applied | None = None
    syncs: list[float] = field(default_factory=list)
    means: list[float] = field(default_factory=list)
    p50s: list[float] = field(default_factory=list)
    p99s: list[float] = field(default_factory=list)
    heads: list[float] = field(default_factory=list)
    walks: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    kernel: list[KernelSetup] = field(default_factory=list)       # the last Service, per repetition
    kernel_heads: list[KernelSetup] = field(default_factory=list)  # the first Service
    proxy: list[Applied] = field(default_factory=list)            # every repetition's kube-proxy figures
    windows: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: {"load": [], "measure": []})
    footprint: dict[str, object] = field(default_factory=dict)

    def add(self, res: common_pb2.ProbeResult, head: common_pb2.ProbeResult | None) -> None:
        if not (res.ok and "p50_us" in res.figures):
            self.errors.append(res.error or "no connection succeeded")
            return
        self.means.append(res.figures.get("mean_us", math.nan))
        self.p50s.append(res.figures["p50_us"])
        self.p99s.append(res.figures.get("p99_us", math.nan))
        if head is not None and head.ok and "p50_us" in head.figures:
            self.heads.append(head.figures["p50_us"])
            self.walks.append(res.figures["p50_us"] - head.figures["p50_us"])

    def row(self, n: int) -> dict[str, object]:
        assert self.applied is not None
        a = self.applied
        row: dict[str, object] = {
            "services": n, "rules": max(a.rules.values()) if a.rules else 0, "rules_per_node": a.rules,
            "sync_ms": round(stats.median(self.syncs) * 1000, 1), "target": a.target_ip, "first": a.first_ip,
            "signal": a.signal, "repeat": len(self.p50s)}
        if self.p50s:
            mean, p50 = bm.aggregate(self.means), bm.aggregate(self.p50s)
            row.update(setup_mean_us=mean.median, setup_mean_min_us=mean.lo, setup_mean_max_us=mean.hi,
                       setup_p50_us=p50.median, setup_p50_min_us=p50.lo, setup_p50_max_us=p50.hi,
                       setup_p99_us=bm.aggregate(self.p99s).median)
        if self.walks:
            w = bm.aggregate(self.walks)
            row.update(walk_p50_us=w.median, walk_p50_min_us=w.lo, walk_p50_max_us=w.hi,
                       first_p50_min_us=min(self.heads),
                       # load only ever adds latency: the floors are the steadiest estimate
                       walk_floor_us=min(self.p50s) - min(self.heads))
        row.update(self._kernel_row())
        row.update(proxy_row(self.proxy))
        row.update(self.footprint)
        if self.errors:
            row["errors"] = self.errors[:3]
        return row

    def _kernel_row(self) -> dict[str, object]:
        """The tracer's mean setup over the repetitions it measured, its Δcount against the probes'."""
        out: dict[str, object] = {}
        got = [k for k in self.kernel if k.mean_us is not None]
        if got:
            m = bm.aggregate([k.mean_us for k in got if k.mean_us is not None])
            out.update(kernel_setup_mean_us=round(m.median, 1), kernel_setup_mean_min_us=round(m.lo, 1),
                       kernel_setup_mean_max_us=round(m.hi, 1), kernel_connects=sum(k.connects for k in got),
                       kernel_probe_connects=sum(k.probe_connects for k in got), kernel_repeat=len(got))
        pairs = [(k.mean_us, h.mean_us) for k, h in zip(self.kernel, self.kernel_heads, strict=False)
                 if k.mean_us is not None and h.mean_us is not None]
        if pairs:
            out["kernel_first_mean_us"] = round(stats.median([h for _, h in pairs]), 1)
            out["kernel_walk_us"] = round(stats.median([k - h for k, h in pairs]), 1)
        notes = list(dict.fromkeys(k.note for k in self.kernel if k.note))
        if notes:
            out["kernel_note"] = "; ".join(notes)
        return out


def proxy_row(applied: list[Applied]) -> dict[str, object]:
    """kube-proxy's own sync time during the step: per repetition the slowest node's mean sync
    (Δ seconds / Δ syncs), the median over repetitions; and the syncs per node."""
    worst: list[float] = []
    syncs: list[float] = []
    for a in applied:
        per = [(n, t) for n, t in a.proxy_sync.values() if n > 0]
        if per:
            worst.append(max(1000 * t / n for n, t in per))
            syncs.append(stats.median([n for n, _ in per]))
    out: dict[str, object] = {}
    if worst:
        w = bm.aggregate(worst)
        out.update(proxy_sync_ms=round(w.median, 1), proxy_sync_min_ms=round(w.lo, 1),
                   proxy_sync_max_ms=round(w.hi, 1), proxy_syncs=stats.median(syncs))
    elif any(a.proxy_sync for a in applied):
        out["proxy_note"] = "kube-proxy did not sync during the step"
    notes = ([str(out.pop("proxy_note"))] if "proxy_note" in out else []) + \
        list(dict.fromkeys(a.proxy_note for a in applied if a.proxy_note))
    if notes:
        out["proxy_note"] = "; ".join(notes)
    return out


@dataclass
class ScalingRun:
    state: ClusterState
    dispatcher: Dispatcher
    manager: RunManager
    backend_factory: object = None  # (lab_name, backend) -> ServiceBackend; the lab by default
    scaler_factory: Callable[[], ServiceScaler] = scaler_from_env
    settle_timeout: float = 300.0   # the data plane's settling, per Kubernetes step
    settle_poll: float = 1.0
    settle_report_wait: float = 10.0   # per poll, for every agent's fresh report
    endpoint_timeout: float = 120.0
    kernel_wait: float = kernel_setup.WAIT  # for the tracer's counters after a probe

    async def start(self, req: runs_pb2.ServiceScalingRequest) -> ActiveRun:
        from cniscope.collector.runs.run_fingerprint import is_lab

        counts = sorted(set(req.counts)) or [4, 104, 1000]
        if counts[0] < 1 or counts[-1] > MAX_SERVICES:
            raise ValidationError(f"service counts must be 1..{MAX_SERVICES}")
        sources = sorted(self.state.sessions)
        if not sources:
            raise ValidationError("no agent is connected")
        in_lab = all(is_lab(st) for n, st in self.state.nodes.items() if n in self.state.sessions)
        backends = resolve_backends(req, in_lab)
        scaler = None
        if KUBERNETES in backends:
            try:
                scaler = await asyncio.to_thread(self.scaler_factory)
            except Unavailable as exc:
                raise Unavailable(f"service scaling outside the lab needs a Kubernetes API server: {exc}") from None
        repeat = req.repeat or 3
        connects = req.connects or DEFAULT_CONNECTS
        run = runs_pb2.Run(label=req.label or f"services {','.join(map(str, counts))}", kind="services",
                           suite="services", repeat=repeat, pairs=[f"{sources[0]}→ClusterIP"])
        factory = self.backend_factory or lab_backend

        async def make(ar: ActiveRun, b: str) -> ServiceBackend:
            if b != KUBERNETES:
                assert callable(factory)
                made: ServiceBackend = await asyncio.to_thread(factory, req.lab, b)
                return made
            from cniscope.collector.runs.k8s_services import DataPlaneWatch, KubeServices

            assert scaler is not None
            watch = DataPlaneWatch(self.state, sorted(self.state.sessions), ar.cancel, ar.emit,
                                   poll=self.settle_poll, timeout=self.settle_timeout,
                                   report_wait=self.settle_report_wait)
            return KubeServices(scaler, watch, asyncio.get_running_loop(), ar.run.run_id, self.endpoint_timeout)

        async def body(ar: ActiveRun) -> None:
            await self._body(ar, counts, backends, sources[0], repeat, connects, make)

        return await self.manager.launch(run, body)

    async def _body(self, ar: ActiveRun, counts: list[int], backends: list[str], source: str,
                    repeat: int, connects: int,
                    make: Callable[[ActiveRun, str], Awaitable[ServiceBackend]]) -> None:
        """Round-robin over N: each repetition programs every N in turn and measures it, so a busy
        machine's load drifts over all N alike instead of landing on one step."""
        run = ar.run
        ar.progress_total = len(backends) * len(counts) * repeat
        from cniscope.collector.runs.run_fingerprint import derive

        run.fingerprint.update(derive(dict(self.state.nodes)))
        table: dict[str, list[dict[str, object]]] = {}
        kernel = KernelWatch(self.state, source, ar.cancel, self.kernel_wait)
        for b in backends:
            svc = await make(ar, b)
            acc: dict[int, _Step] = {n: _Step() for n in counts}
            try:
                await asyncio.to_thread(svc.prepare)
                for rep in range(repeat):
                    for n in counts:
                        ar.check()
                        ar.emit(f"{b}: programming {n} Services (rep {rep + 1}/{repeat})")
                        st = acc[n]
                        t_load = time.time_ns()
                        applied = await asyncio.to_thread(svc.apply, n)
                        st.windows["load"].append((t_load, time.time_ns()))
                        st.applied = applied
                        st.proxy.append(applied)
                        st.syncs.append(applied.sync_seconds)
                        ar.check()
                        ar.emit(f"{b}: {n} Services, connect ×{connects} to {applied.target_ip} (rep {rep + 1}/{repeat})")
                        t_measure = time.time_ns()
                        kernel.check()
                        # an unmeasured batch first: neighbour entries and caches settle after a reload
                        warm = await self._connect(ar, source, applied.target_ip, applied.target_port, min(connects, 20))
                        await kernel.mark(warm)
                        res = await self._connect(ar, source, applied.target_ip, applied.target_port, connects)
                        st.kernel.append(await kernel.measure(res))
                        head = None
                        if applied.first_ip and applied.first_ip != applied.target_ip:
                            head = await self._connect(ar, source, applied.first_ip, applied.target_port, connects)
                            st.kernel_heads.append(await kernel.measure(head))
                        st.windows["measure"].append((t_measure, time.time_ns()))
                        ar.progress_done += 1
                        st.add(res, head)
                    rows = [acc[n].row(n) for n in counts if acc[n].applied is not None]
                    table[b] = rows
                    run.detail_json = json.dumps(scaling_detail(table))
                nodes = sorted(self.state.sessions)
                for n in counts:
                    acc[n].footprint = await self._footprint(acc[n], nodes)
                table[b] = [acc[n].row(n) for n in counts if acc[n].applied is not None]
                p = metric_prefix(b)
                vals = [(f"svc_{p}_{n}.p50", i, source, v, "") for n in counts for i, v in enumerate(acc[n].p50s)]
                await self.manager.db(rstore.add_values, run.run_id, vals)
            finally:
                ar.emit(f"{b}: removing the Services")
                await asyncio.shield(asyncio.to_thread(svc.cleanup))
        run.detail_json = json.dumps(scaling_detail(table))

    async def _footprint(self, st: _Step, nodes: list[str]) -> dict[str, object]:
        """CNI CPU and RSS while the step's Services were loaded and settled, and while it was measured."""
        out: dict[str, object] = {}
        for phase in ("load", "measure"):
            got = await self.manager.db(footprint_figures.window_footprint, nodes, st.windows[phase])
            assert isinstance(got, tuple)
            vals: dict[str, float] = got[0]
            if "cni_cpu_millicores" in vals:
                out[f"cni_cpu_{phase}_m"] = round(vals["cni_cpu_millicores"], 1)
            if "cni_rss_bytes" in vals:
                out[f"cni_rss_{phase}_mib"] = round(vals["cni_rss_bytes"] / 2**20, 1)
        if not out:
            out["cni_note"] = ("unavailable: no CNI agent process was sampled on any node during the step "
                               "(no cni_cpu_millicores / cni_rss_bytes samples)")
        return out

    async def _connect(self, ar: ActiveRun, source: str, ip: str, port: int, count: int) -> common_pb2.ProbeResult:
        req = common_pb2.ProbeRequest(kind="connect", source_node=source, path="service", target_address=ip,
                                      params={"count": str(count), "port": str(port)})
        result = await run_probe(self.dispatcher, ar, req)
        return result or common_pb2.ProbeResult(ok=False, error="no result")


def scaling_detail(table: dict[str, list[dict[str, object]]]) -> dict[str, object]:
    """Per backend: rows with Δ vs the smallest N and "within noise" marks, and the slope in ns/rule."""
    out: dict[str, object] = {}
    for b, rows in table.items():
        base = rows[0] if rows else None
        res: dict[str, object] = {"rows": rows}
        for stat in ("mean", "p50"):
            pts: list[tuple[float, float]] = []
            for r in rows:
                m = r.get(f"setup_{stat}_us")
                if isinstance(m, float) and isinstance(r.get("rules"), int):
                    pts.append((float(r["rules"]), m))  # type: ignore[arg-type]
                b0v = base.get(f"setup_{stat}_us") if base is not None else None
                if base is not None and isinstance(m, float) and isinstance(b0v, float):
                    b0 = bm.FigureStat(b0v, base[f"setup_{stat}_min_us"], base[f"setup_{stat}_max_us"])  # type: ignore[arg-type]
                    b1 = bm.FigureStat(m, r[f"setup_{stat}_min_us"], r[f"setup_{stat}_max_us"])  # type: ignore[arg-type]
                    d = bm.delta("connect.mean", b0, b1)
                    r[f"delta_{stat}_us"] = d.abs
                    r[f"delta_{stat}_pct"] = d.pct
                    r[f"verdict_{stat}"] = d.verdict if r is not base else "baseline"
            res[f"slope_{stat}_ns_per_rule"] = slope_ns_per_rule(pts)
        res["slope_ns_per_rule"] = res["slope_mean_ns_per_rule"]
        # the walk over the rules between the first and the last Service, against the smallest N
        b0w = base.get("walk_p50_us") if base is not None else None
        wpts: list[tuple[float, float]] = []
        for r in rows:
            w = r.get("walk_p50_us")
            fl = r.get("walk_floor_us")
            if isinstance(fl, float) and isinstance(r.get("rules"), int):
                wpts.append((float(r["rules"]), fl))  # type: ignore[arg-type]
            if base is not None and isinstance(w, float) and isinstance(b0w, float):
                d = bm.delta("connect.mean", bm.FigureStat(b0w, base["walk_p50_min_us"], base["walk_p50_max_us"]),  # type: ignore[arg-type]
                             bm.FigureStat(w, r["walk_p50_min_us"], r["walk_p50_max_us"]))  # type: ignore[arg-type]
                r["verdict_walk"] = d.verdict if r is not base else "baseline"
        res["slope_walk_ns_per_rule"] = slope_ns_per_rule(wpts)
        kpts = [(float(r["rules"]), float(r["kernel_setup_mean_us"])) for r in rows  # type: ignore[arg-type]
                if isinstance(r.get("kernel_setup_mean_us"), float) and isinstance(r.get("rules"), int)]
        res["slope_kernel_ns_per_rule"] = slope_ns_per_rule(kpts)
        out[b] = res
    return {"scaling": out}
