"""Service scaling: N Services per step, then NAT rule counts and pod→Service connect setup.

Where the Services come from is a :class:`~.service_backend.ServiceBackend`: Kubernetes Services
through the API (:class:`.k8s_services.KubeServices`, which waits until the agents' census shows the
data plane programmed), or one of the lab backends the collector was given at construction
(kube-proxy-shaped rules loaded into every lab node namespace). :func:`.service_backend.resolve_backends`
picks them from the request and the connected agents.

The probed Service is the last one created: the last rule of KUBE-SERVICES, the worst case of the
linear chain walk, and an ordinary lookup for the verdict map.

Beside the userspace probe each step records the same connects as the source node's in-kernel
tracer saw them (:mod:`.kernel_setup`; a note where the tracer is not running), kube-proxy's own
sync time (Kubernetes only; :mod:`.k8s_services`) and the CNI agents' CPU and RSS while the step was
loaded and settled and while it was measured (:mod:`.footprint_figures`). Rows and the stored detail
are :mod:`.scaling_step`'s and :mod:`.scaling_detail`'s.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from cniscope.api.v1 import common_pb2, runs_pb2
from cniscope.collector.dispatcher import Dispatcher
from cniscope.collector.runs import footprint_figures, kernel_setup
from cniscope.collector.runs import run_store as rstore
from cniscope.collector.runs.k8s_services import DataPlaneWatch, KubeServices, uses_api
from cniscope.collector.runs.kernel_setup import KernelWatch
from cniscope.collector.runs.manager import ActiveRun, RunManager, run_probe
from cniscope.collector.runs.run_fingerprint import derive, is_lab
from cniscope.collector.runs.scaling_detail import metric_prefix, scaling_detail
from cniscope.collector.runs.scaling_step import ScalingStep
from cniscope.collector.runs.service_backend import KUBERNETES, LabBackends, ServiceBackend, resolve_backends
from cniscope.collector.runs.service_scaler import ServiceScaler
from cniscope.collector.state import ClusterState
from cniscope.core import config
from cniscope.core.errors import Unavailable, ValidationError

MAX_SERVICES = 5000
DEFAULT_CONNECTS = 200


def scaler_from_env() -> ServiceScaler:
    """The collector's ServiceScaler: CNISCOPE_SCALING_NAMESPACE, $KUBECONFIG or the pod's service account."""
    return ServiceScaler.from_config(config.load(config.CollectorConfig))


@dataclass
class ScalingRun:
    state: ClusterState
    dispatcher: Dispatcher
    manager: RunManager
    lab_backends: LabBackends = field(default_factory=dict)  # name → factory(lab name); none outside a lab
    scaler_factory: Callable[[], ServiceScaler] = scaler_from_env
    settle_timeout: float = 300.0   # the data plane's settling, per Kubernetes step
    settle_poll: float = 1.0
    settle_report_wait: float = 10.0   # per poll, for every agent's fresh report
    endpoint_timeout: float = 120.0
    kernel_wait: float = kernel_setup.WAIT  # for the tracer's counters after a probe

    async def start(self, req: runs_pb2.ServiceScalingRequest) -> ActiveRun:
        counts = sorted(set(req.counts)) or [4, 104, 1000]
        if counts[0] < 1 or counts[-1] > MAX_SERVICES:
            raise ValidationError(f"service counts must be 1..{MAX_SERVICES}")
        sources = sorted(self.state.sessions)
        if not sources:
            raise ValidationError("no agent is connected")
        in_lab = all(is_lab(st) and not uses_api(st) for n, st in self.state.nodes.items() if n in self.state.sessions)
        backends = resolve_backends(req, in_lab, list(self.lab_backends))
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

        async def make(ar: ActiveRun, b: str) -> ServiceBackend:
            if b != KUBERNETES:
                return await asyncio.to_thread(self.lab_backends[b], req.lab)
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
        run.fingerprint.update(derive(dict(self.state.nodes)))
        table: dict[str, list[dict[str, object]]] = {}
        kernel = KernelWatch(self.state, source, ar.cancel, self.kernel_wait)
        for b in backends:
            svc = await make(ar, b)
            acc: dict[int, ScalingStep] = {n: ScalingStep() for n in counts}
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

    async def _footprint(self, st: ScalingStep, nodes: list[str]) -> dict[str, object]:
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
