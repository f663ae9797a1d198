"""The Runs gRPC service: start/cancel/list/get/delete runs and compare them (also against the
published reference figures), rendered in the format the client asks for."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from cniscope.api.v1 import runs_pb2, runs_pb2_grpc
from cniscope.collector import reference
from cniscope.collector.dispatcher import Dispatcher
from cniscope.collector.reports import FORMATS, render
from cniscope.collector.reports.jsonout import render_json
from cniscope.collector.reports.report_model import RunView, compare
from cniscope.collector.request_bounds import check_compare
from cniscope.collector.runs import run_store as rstore
from cniscope.collector.runs.manager import RunManager
from cniscope.collector.runs.service_backend import LabBackends
from cniscope.collector.runs.service_fronts import FrontsSource
from cniscope.collector.runs.services import ScalingRun
from cniscope.collector.runs.suite_run import SuiteRun
from cniscope.collector.state import ClusterState
from cniscope.collector.store import Store
from cniscope.core import benchmetrics as bm
from cniscope.core import grpcutil
from cniscope.core.errors import CniscopeError, Unavailable, ValidationError


def _status(exc: CniscopeError) -> grpc.StatusCode:
    if isinstance(exc, Unavailable):  # the collector answered: what the run needs is not here
        return grpc.StatusCode.FAILED_PRECONDITION
    return grpcutil.status_code(exc.grpc_status)


class RunsService(runs_pb2_grpc.RunsServicer):
    def __init__(self, state: ClusterState, store: Store, dispatcher: Dispatcher,
                 manager: RunManager | None = None, lab_backends: LabBackends | None = None,
                 service_fronts: FrontsSource | None = None) -> None:
        self.store = store
        self.manager = manager or RunManager(store)
        self.suite = SuiteRun(state, dispatcher, self.manager, service_fronts)
        self.scaling = ScalingRun(state, dispatcher, self.manager, lab_backends or {})  # its order may change

    async def _abort(self, context: grpc.aio.ServicerContext, exc: CniscopeError) -> None:  # type: ignore[type-arg]
        await context.abort(_status(exc), str(exc))

    async def StartRun(self, request: runs_pb2.StartRunRequest,  # noqa: N802
                       context: grpc.aio.ServicerContext) -> AsyncIterator[runs_pb2.RunUpdate]:  # type: ignore[type-arg]
        try:
            ar = await self.suite.start(request)
        except CniscopeError as exc:
            await self._abort(context, exc)
            return
        async for upd in self.manager.watch(ar):
            yield upd

    async def StartServiceScaling(self, request: runs_pb2.ServiceScalingRequest,  # noqa: N802
                                  context: grpc.aio.ServicerContext) -> AsyncIterator[runs_pb2.RunUpdate]:  # type: ignore[type-arg]
        try:
            ar = await self.scaling.start(request)
        except CniscopeError as exc:
            await self._abort(context, exc)
            return
        async for upd in self.manager.watch(ar):
            yield upd

    async def CancelRun(self, request: runs_pb2.RunRef,  # noqa: N802
                        context: grpc.aio.ServicerContext) -> runs_pb2.Run:  # type: ignore[type-arg]
        try:
            run_id = await self.store.call(rstore.resolve, self.store.conn, request.run_id)
            return await self.manager.cancel(run_id)
        except CniscopeError as exc:
            await self._abort(context, exc)
            raise

    async def ListRuns(self, request: runs_pb2.ListRunsRequest,  # noqa: N802
                       context: grpc.aio.ServicerContext) -> runs_pb2.ListRunsResponse:  # type: ignore[type-arg]
        runs = await self.store.call(rstore.list_runs, self.store.conn, request.limit or 100)
        return runs_pb2.ListRunsResponse(runs=runs)

    async def GetRun(self, request: runs_pb2.RunRef,  # noqa: N802
                     context: grpc.aio.ServicerContext) -> runs_pb2.Run:  # type: ignore[type-arg]
        try:
            return await self.store.call(rstore.get_run, self.store.conn, request.run_id)
        except CniscopeError as exc:
            await self._abort(context, exc)
            raise

    async def DeleteRun(self, request: runs_pb2.RunRef,  # noqa: N802
                        context: grpc.aio.ServicerContext) -> runs_pb2.DeleteRunResponse:  # type: ignore[type-arg]
        try:
            run_id = await self.store.call(rstore.resolve, self.store.conn, request.run_id)
            if run_id in self.manager.active:
                raise ValidationError(f"run {run_id} is still running; cancel it first")
            ok = await self.store.call(rstore.delete_run, self.store.conn, run_id)
        except CniscopeError as exc:
            await self._abort(context, exc)
            raise
        return runs_pb2.DeleteRunResponse(deleted=ok)

    async def Compare(self, request: runs_pb2.CompareRequest,  # noqa: N802
                      context: grpc.aio.ServicerContext) -> runs_pb2.CompareResponse:  # type: ignore[type-arg]
        try:
            check_compare(request)
            runs = [rstore.to_view(await self.store.call(rstore.get_run, self.store.conn, r))
                    for r in request.run_ids]
            return build_comparison(runs, request)
        except CniscopeError as exc:
            await self._abort(context, exc)
            raise


def build_comparison(runs: list[RunView], request: runs_pb2.CompareRequest) -> runs_pb2.CompareResponse:
    """Reference scenarios (when asked) first, then the stored runs; deltas against the baseline."""
    fmt = request.format or "table"
    if fmt not in FORMATS:
        raise ValidationError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    refs = reference.parse_spec(request.reference) if request.reference else []
    views = [*refs, *runs]
    if not views:
        raise ValidationError("nothing to compare: name one or more runs, or --reference")
    base = 0
    if request.baseline:
        matches = [i for i, v in enumerate(views) if request.baseline in (v.id, v.label)
                   or v.id.startswith(request.baseline) or v.id.rsplit(":", 1)[-1] == request.baseline  # ref:E
                   or v.label.startswith(request.baseline + ":")]                                    # "E: ..."
        if not matches:
            raise ValidationError(f"baseline {request.baseline!r} is not among the compared runs")
        base = matches[0]
    thresholds = [bm.parse_threshold(t) for t in request.fail_if]
    c = compare(views, base, thresholds)
    if refs:
        name = request.reference.partition(":")[0]
        shown = {v.id.rsplit(":", 1)[1] for v in refs}
        c.headlines.extend({"name": h.name, "metric": h.metric, "from": h.frm, "to": h.to, "pct": h.pct,
                            "reproduced": h.reproduced, "text": h.text()}
                           for h in reference.headlines(name) if h.frm in shown and h.to in shown)
        prov = reference.raw(name)["provenance"]
        c.notes.append(f"published figures: {name} — {prov['platform']}, {prov['node_type']}, Cilium {prov['cilium']}, "
                       f"{prov['statistic']}")
    return runs_pb2.CompareResponse(rendered=render(c, fmt), json=render_json(c),
                                    failed=[g.text for g in c.failed],
                                    failures=[f"{g.run}: {g.why}" for g in c.failed])
