"""Service scaling in Kubernetes, through the collector's Runs gRPC service (StartServiceScaling,
CancelRun, the client stream going away as on Ctrl-C).

There is no API server on this machine. As in test_k8s_client.py, the real kubernetes client talks
over HTTP to tests/k8s/apiserver.py, a local stand-in: kubeconfig loading, the bearer token, label
selectors, Status errors. It is not a replay of a cluster: it creates a Service on POST (ClusterIP
from 198.18.64.0/24) and serves the EndpointSlices this test gives it, in the API's object shapes.

The agents are simulated at the collector's edge (real ClusterState sessions): each answers a
refresh command with a capability report whose census is computed by the agent's own code — the
iptables unit's ``census()`` over kube-proxy-shaped iptables-save output, or ``cilium_summary()``
over a Cilium service map — for the Services its data plane has programmed so far. That data plane
lags the API by two Services per report, so counts grow over several reports before they settle.
Connect probes go to a scripted dispatcher that records when and where they were aimed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from cniscope.agent.inspectors import iptables as ipt
from cniscope.agent.inspectors.bpf import cilium_summary
from cniscope.agent.inspectors.iptables_parse import kube_proxy_figures
from cniscope.api.v1 import agent_pb2, cluster_pb2, common_pb2, runs_pb2, runs_pb2_grpc
from cniscope.api.v1 import capabilities_pb2 as cap
from cniscope.collector.reports.scaling import render_scaling
from cniscope.collector.runs.run_fingerprint import data_plane_counts
from cniscope.collector.runs.runs_service import RunsService
from cniscope.collector.runs.service_backend import KUBERNETES, resolve_backends
from cniscope.collector.runs.service_scaler import MANAGED_BY, ServiceScaler
from cniscope.collector.state import ClusterState, Session
from cniscope.collector.store import Store
from cniscope.core import grpcutil, kubeapi
from cniscope.core.errors import Unavailable, ValidationError
from cniscope.lab import kubeproxy
from tests.k8s.apiserver import FakeApiServer
from tests.pipeline_kit import free_port
from tests.waiting import wait_for

pytestmark = pytest.mark.k8s

NS = "cniscope-probe"
NODES = {"ip-192-168-12-34": ("192.168.12.34", "192.168.40.7"),
         "ip-192-168-33-10": ("192.168.33.10", "192.168.51.4")}
PROBE_PODS = ["198.19.1.11", "198.19.2.11", "198.19.3.11"]  # endpoints in the rendered rules


def managed(api: FakeApiServer) -> dict[str, dict[str, Any]]:
    store = dict(api.services.get(NS, {}))
    return {k: v for k, v in store.items() if (v["metadata"].get("labels") or {}).get(MANAGED_BY) == "cniscope"}


SYNC_SECONDS = 0.25  # every kube-proxy sync of the simulated nodes takes this long


def kube_proxy_metrics(syncs: int) -> str:
    """kube-proxy's /metrics after ``syncs`` rule syncs of SYNC_SECONDS each."""
    h = "kubeproxy_sync_proxy_rules_duration_seconds"
    return (f'{h}_bucket{{le="0.128"}} 0\n{h}_bucket{{le="0.256"}} {syncs}\n{h}_bucket{{le="+Inf"}} {syncs}\n'
            f"{h}_sum {SYNC_SECONDS * syncs}\n{h}_count {syncs}\n")


def iptables_report(n: int, syncs: int = 0) -> common_pb2.CapabilityReport:
    """The agent's iptables census of kube-proxy's rules for ``n`` Services, with kube-proxy's sync
    figures as the agent's parser reads them from its /metrics."""
    text = kubeproxy.render_iptables(kubeproxy.plan(n, PROBE_PODS, port=7411, target_port=7421) if n else [])

    def run(argv: Any) -> ipt.ToolOutput:
        return ipt.ToolOutput(0, text if argv[0] == "iptables-nft-save" else "", "")

    res = ipt.census(run, sysroot=Path("/nonexistent"), metrics_address="off", fast_tables=False)
    assert isinstance(res.detail, cap.IptablesDetail)
    res.detail.kube_proxy.metrics.CopyFrom(kube_proxy_figures(kube_proxy_metrics(syncs)))
    rep = common_pb2.CapabilityReport(time_unix_nano=time.time_ns(), kernel="6.1")
    rep.units.add(name="iptables", ok=True, available=True, iptables=res.detail, summary=ipt.summarize(res.detail))
    return rep


BPF_BASE = 20  # the cluster's own Services (kubernetes, kube-dns) in the map before the run


def cilium_report(n: int, syncs: int = 0) -> common_pb2.CapabilityReport:
    """The agent's eBPF census summary of Cilium's service map: one entry per Service plus one per backend."""
    maps = [cap.BpfMap(name="cilium_lb4_services_v2", cilium_class="service", entries=BPF_BASE + 4 * n,
                       max_entries=65536),
            cap.BpfMap(name="cilium_lb4_backends_v3", cilium_class="backend", entries=3, max_entries=65536)]
    rep = common_pb2.CapabilityReport(time_unix_nano=time.time_ns(), kernel="6.1")
    rep.units.add(name="bpf", ok=True, available=True, bpf=cap.BpfDetail(maps=maps, cilium=cilium_summary(maps)))
    return rep


REPORTS: dict[str, tuple[Callable[[int, int], common_pb2.CapabilityReport], Callable[[int], int], str]] = {
    "iptables": (iptables_report, kubeproxy.nat_rule_count, "NAT rules"),
    "cilium": (cilium_report, lambda n: BPF_BASE + 4 * n, "BPF service map entries")}


@dataclass
class DataPlane:
    """What each node has programmed: it follows the managed Services in the API, ``step`` per refresh."""

    api: FakeApiServer
    kind: str = "iptables"
    step: int = 2
    frozen: bool = False
    silent: set[str] = field(default_factory=set)
    programmed: dict[str, int] = field(default_factory=dict)
    seen: dict[str, list[int]] = field(default_factory=dict)   # per node: the count in each report
    syncs: dict[str, int] = field(default_factory=dict)        # per node: kube-proxy's rule syncs so far

    def report(self, node: str) -> common_pb2.CapabilityReport:
        cur = was = self.programmed.get(node, 0)
        if not self.frozen:
            want = len(managed(self.api))
            cur += max(-self.step, min(self.step, want - cur))
        self.programmed[node] = cur
        self.syncs[node] = self.syncs.get(node, 0) + (cur != was)  # a change is one sync
        rep = REPORTS[self.kind][0](cur, self.syncs[node])
        self.seen.setdefault(node, []).append(REPORTS[self.kind][1](cur))
        return rep


async def agent(state: ClusterState, node: str, plane: DataPlane) -> None:
    s = state.sessions[node]
    while True:
        msg = await s.outbox.get()
        if isinstance(msg, bytes):   # a peer-table broadcast, encoded once for every stream
            continue
        if msg.command.WhichOneof("body") == "refresh_capabilities" and node not in plane.silent:
            await asyncio.sleep(0.01)
            state.on_capabilities(node, plane.report(node))


class Connects:
    """The dispatcher: records each connect probe with what the API and the census held at that moment."""

    def __init__(self, api: FakeApiServer, state: ClusterState, kind: str) -> None:
        self.api, self.state, self.kind = api, state, kind
        self.requests: list[tuple[common_pb2.ProbeRequest, list[str], dict[str, int]]] = []

    async def run(self, req: common_pb2.ProbeRequest) -> AsyncIterator[cluster_pb2.ProbeUpdate]:
        svcs = managed(self.api)
        aimed = sorted(k for k, v in svcs.items() if v["spec"]["clusterIP"] == req.target_address)
        census = {n: next(iter(data_plane_counts(st.capabilities).values()), -1) for n, st in self.state.nodes.items()}
        self.requests.append((req, [*aimed, f"of {len(svcs)}"], census))
        v = 100.0 + len(svcs)
        yield cluster_pb2.ProbeUpdate(result=common_pb2.ProbeResult(
            probe_id=req.probe_id, kind="connect", ok=True, figures={"mean_us": v, "p50_us": v, "p99_us": 2 * v}))

    def cancel(self, probe_id: str) -> bool:
        return False


@dataclass
class Rig:
    api: FakeApiServer
    state: ClusterState
    plane: DataPlane
    connects: Connects
    service: RunsService
    address: str


@asynccontextmanager
async def rig_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str = "iptables",
                  leftovers: int = 0) -> AsyncIterator[Rig]:
    api = FakeApiServer().start()
    api.services[NS] = {"keep-me": {"metadata": {"name": "keep-me", "labels": {"app": "x"}},
                                    "spec": {"clusterIP": "198.18.64.250"}}}
    for i in range(10):   # the EndpointSlice controller's slices: the probe pods behind every Service
        name = f"cniscope-scale-{i:05d}"
        api.endpointslices.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": f"{name}-x1", "namespace": NS, "labels": {"kubernetes.io/service-name": name}},
            "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in PROBE_PODS],
            "ports": [{"name": "accept", "port": 7421, "protocol": "TCP"}]})
    monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig(tmp_path / "kubeconfig")))
    monkeypatch.setenv("CNISCOPE_SCALING_NAMESPACE", NS)
    if leftovers:  # an earlier run that crashed left these behind
        ServiceScaler(NS, kubeapi.api_client()).create_services(leftovers, run="crashed")
    plane = DataPlane(api, kind, programmed={n: leftovers for n in NODES})
    state = ClusterState()
    for node, (host, pod) in NODES.items():
        hello = agent_pb2.Hello(node=node, boot_id="b1", host_ip=host, pod_ip=pod,
                                capabilities=REPORTS[kind][0](leftovers, 0))
        state.connect(hello, Session(node, "b1"), time.time_ns())
    agents = [asyncio.create_task(agent(state, n, plane)) for n in NODES]
    store = Store(tmp_path / "c.db")
    connects = Connects(api, state, kind)
    service = RunsService(state, store, connects)  # type: ignore[arg-type]
    service.scaling.settle_poll = 0.05
    service.scaling.settle_timeout = 20.0
    service.scaling.settle_report_wait = 1.0
    service.scaling.endpoint_timeout = 5.0
    server = grpc.aio.server()
    runs_pb2_grpc.add_RunsServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield Rig(api, state, plane, connects, service, f"127.0.0.1:{port}")
    finally:
        for t in agents:
            t.cancel()
        await server.stop(0)
        store.close()
        api.stop()


async def scale(rig: Rig, req: runs_pb2.ServiceScalingRequest) -> tuple[runs_pb2.Run, list[str]]:
    progress: list[str] = []
    async with grpcutil.insecure_channel(rig.address) as ch:
        async for upd in runs_pb2_grpc.RunsStub(ch).StartServiceScaling(req):
            if upd.WhichOneof("body") == "run":
                return upd.run, progress
            progress.append(upd.progress.message)
    raise AssertionError("the stream ended without the final run")


def requests_of(api: FakeApiServer, method: str) -> list[str]:
    return [r.path.rsplit("/", 1)[1] for r in api.requests if r.method == method and "/services" in r.path]


@pytest.mark.parametrize("kind", ["iptables", "cilium"])
async def test_auto_creates_labelled_services_waits_for_the_census_and_cleans_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    async with rig_for(tmp_path, monkeypatch, kind, leftovers=2) as rig:
        mark = len(rig.api.requests)
        run, progress = await scale(rig, runs_pb2.ServiceScalingRequest(counts=[3, 6], repeat=1, connects=30))
        assert run.status == runs_pb2.RUN_STATUS_DONE, run.error
        rows = {r["services"]: r for r in json.loads(run.detail_json)["scaling"][KUBERNETES]["rows"]}
        count, label = REPORTS[kind][1], REPORTS[kind][2]
        for n in (3, 6):
            assert rows[n]["rules_per_node"] == {node: count(n) for node in NODES}
            assert rows[n]["signal"] == label
        table = render_scaling(run.label, json.loads(run.detail_json), "table")
        assert ("kubernetes: the NAT rules column counts BPF service map entries" in table) is (kind == "cilium")
        # kube-proxy's own figure: each node synced once per programmed change, SYNC_SECONDS each
        for n in (3, 6):
            if kind == "iptables":
                assert rows[n]["proxy_sync_ms"] == 1000 * SYNC_SECONDS
                assert rows[n]["proxy_syncs"] >= 1
                assert "proxy_note" not in rows[n]
            else:
                assert rows[n]["proxy_note"] == f"no iptables census in the agent's report ({', '.join(NODES)})"
        assert ("250 ms ×" in table) is (kind == "iptables")
        assert "in-kernel setup (tcpconnlat) (every N): tracer tcpconnlat is not running" in table
        # each step is probed at the last Service's ClusterIP, only once every node's census had settled on it
        measured = [(req, aimed, census) for req, aimed, census in rig.connects.requests
                    if req.params["count"] == "30"]
        assert [aimed for _, aimed, _ in measured] == [["cniscope-scale-00002", "of 3"],
                                                       ["cniscope-scale-00005", "of 6"]]
        for (req, _, census), n in zip(measured, (3, 6), strict=True):
            assert (req.path, req.params["port"]) == ("service", "7411")
            assert census == {node: count(n) for node in NODES}
            assert rows[n]["target"] == req.target_address
        # the census grew through an intermediate count (3 → 5 → 6 Services) before the probe
        for node in NODES:
            seen = rig.plane.seen[node]
            assert seen.index(count(5)) < seen.index(count(6))
        assert any("waiting for the data plane" in m for m in progress)
        # leftovers of the crashed run deleted (by label) before anything was created; nothing left now
        ours = rig.api.requests[mark:]
        first_post = next(i for i, r in enumerate(ours) if r.method == "POST")
        early = [r.path.rsplit("/", 1)[1] for r in ours[:first_post] if r.method == "DELETE"]
        assert sorted(early) == ["cniscope-scale-00000", "cniscope-scale-00001"]
        assert sum(r.method == "POST" for r in ours) == 6
        assert "keep-me" not in requests_of(rig.api, "DELETE")
        assert managed(rig.api) == {}
        assert list(rig.api.services[NS]) == ["keep-me"]
        lists = [r for r in rig.api.requests if r.method == "GET" and r.path.endswith("/services")]
        assert lists
        assert all(r.query["labelSelector"] == ["app.kubernetes.io/managed-by=cniscope"] for r in lists)


async def test_a_data_plane_that_never_programs_times_out_clearly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with rig_for(tmp_path, monkeypatch) as rig:
        rig.plane.frozen = True
        rig.service.scaling.settle_timeout = 1.0
        t0 = time.monotonic()
        run, _ = await scale(rig, runs_pb2.ServiceScalingRequest(counts=[4], repeat=1, backends=["kubernetes"]))
        assert run.status == runs_pb2.RUN_STATUS_FAILED
        assert "did not settle within 1s after scaling to 4 Services (unchanged since before the change)" in run.error
        assert "ip-192-168-12-34: NAT rules 8 (unchanged)" in run.error
        assert time.monotonic() - t0 < 10
        assert not [r for r, _, _ in rig.connects.requests]   # nothing measured on an unprogrammed data plane
        assert managed(rig.api) == {}


async def test_a_silent_node_is_named_in_the_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with rig_for(tmp_path, monkeypatch) as rig:
        rig.plane.silent.add("ip-192-168-33-10")
        rig.service.scaling.settle_timeout = 0.5
        rig.service.scaling.settle_report_wait = 0.3
        run, _ = await scale(rig, runs_pb2.ServiceScalingRequest(counts=[2], repeat=1))
        assert run.status == runs_pb2.RUN_STATUS_FAILED
        assert "capability report not refreshed within 0.3s on ip-192-168-33-10" in run.error
        assert managed(rig.api) == {}


async def test_ctrl_c_while_waiting_for_the_data_plane_removes_the_services(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with rig_for(tmp_path, monkeypatch) as rig:
        rig.plane.frozen = True
        async with grpcutil.insecure_channel(rig.address) as ch:
            stub = runs_pb2_grpc.RunsStub(ch)
            call = stub.StartServiceScaling(runs_pb2.ServiceScalingRequest(counts=[5], repeat=1))
            async for upd in call:
                if "waiting for the data plane" in upd.progress.message:
                    break
            assert len(managed(rig.api)) == 5
            (active,) = rig.service.manager.active.values()
            call.cancel()                               # what Ctrl-C in `cniscope bench services` does
            t0 = time.monotonic()
            await asyncio.wait_for(active.done.wait(), 10)
            run = await stub.GetRun(runs_pb2.RunRef(run_id=active.run.run_id))
        assert run.status == runs_pb2.RUN_STATUS_CANCELLED
        assert time.monotonic() - t0 < 5
        assert managed(rig.api) == {}
        assert list(rig.api.services[NS]) == ["keep-me"]


async def test_no_api_server_outside_the_lab_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with rig_for(tmp_path, monkeypatch) as rig:
        monkeypatch.delenv("KUBECONFIG")
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await scale(rig, runs_pb2.ServiceScalingRequest(counts=[4]))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION   # not "cannot reach the collector"
        assert "needs a Kubernetes API server: no Kubernetes configuration" in str(err.value.details())
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await scale(rig, runs_pb2.ServiceScalingRequest(counts=[4], backends=["ipvs"]))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "backend must be one of auto, kubernetes; got 'ipvs'" in str(
            err.value.details())
        assert rig.api.requests == []


def test_backend_choice_follows_the_agents() -> None:
    req = runs_pb2.ServiceScalingRequest
    lab = kubeproxy.BACKENDS   # the lab backends a collector serving a lab is given
    assert resolve_backends(req(), in_lab=True, lab=lab) == ["iptables-nft"]
    assert resolve_backends(req(backend="auto"), in_lab=False, lab=lab) == [KUBERNETES]
    assert resolve_backends(req(backend="auto"), in_lab=False) == [KUBERNETES]
    assert resolve_backends(req(backends=["k8s", "auto"]), in_lab=False, lab=lab) == [KUBERNETES]
    assert resolve_backends(req(backends=["nft", "iptables-nft"]), in_lab=True, lab=lab) == ["nft", "iptables-nft"]
    with pytest.raises(Unavailable, match="lab namespaces whose data plane never sees them"):
        resolve_backends(req(backend="kubernetes"), in_lab=True, lab=lab)
    with pytest.raises(Unavailable, match="the connected agents are not a lab"):
        resolve_backends(req(backend="nft"), in_lab=False, lab=lab)
    with pytest.raises(Unavailable, match=r"without the lab's service backends \(cniscope collector --lab NAME\)"):
        resolve_backends(req(), in_lab=True)
    with pytest.raises(ValidationError, match="got 'bogus'"):
        resolve_backends(req(backend="bogus"), in_lab=True, lab=lab)
    with pytest.raises(ValidationError, match="one of auto, kubernetes; got 'nft'"):
        resolve_backends(req(backend="nft"), in_lab=False)


async def test_the_collector_deletes_leftover_scaling_services_at_start(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A collector killed mid-run leaves labelled Services behind; the next one deletes them as it
    starts (by label only: an unlabelled Service in the namespace stays)."""
    from cniscope.collector.server import Collector
    from cniscope.core.config import CollectorConfig

    api = FakeApiServer().start()
    try:
        api.services[NS] = {"keep-me": {"metadata": {"name": "keep-me", "labels": {"app": "x"}},
                                        "spec": {"clusterIP": "198.18.64.250"}}}
        monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig(tmp_path / "kubeconfig")))
        ServiceScaler(NS, kubeapi.api_client()).create_services(7, run="killed")
        assert len(managed(api)) == 7
        c = Collector(CollectorConfig(db=str(tmp_path / "c.db"), scaling_namespace=NS,
                                      listen=f"127.0.0.1:{free_port()}"))
        await c.start()
        try:
            await asyncio.to_thread(wait_for, lambda: not managed(api), 30.0, "leftover Services deleted")
            assert managed(api) == {}
            assert set(api.services[NS]) == {"keep-me"}
            assert len(requests_of(api, "DELETE")) == 7
        finally:
            await c.stop()
    finally:
        api.stop()
