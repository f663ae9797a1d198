"""Active runs: each runs as its own task (not tied to one client's call), streams progress to
whoever watches it, and stops cleanly: no new probe starts after a cancel, the probe in flight is
cancelled on its agent (:func:`run_probe`), cleanup always runs, and the run is stored as cancelled
with whatever it measured."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field

from cniscope.api.v1 import common_pb2, runs_pb2
from cniscope.collector.dispatcher import Dispatcher
from cniscope.collector.runs import run_store as rstore
from cniscope.collector.store import Store
from cniscope.core import benchmetrics as bm
from cniscope.core.errors import CniscopeError, NotFound

log = logging.getLogger("cniscope.collector.runs")


class Stopped(Exception):
    """Raised inside a run body when a cancel was requested."""


@dataclass
class ActiveRun:
    run: runs_pb2.Run
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    watchers: list[asyncio.Queue[runs_pb2.RunUpdate]] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    progress_done: int = 0
    progress_total: int = 0
    probes: int = 0

    def check(self) -> None:
        if self.cancel.is_set():
            raise Stopped

    def emit(self, message: str, *, step: bool = False) -> None:
        if step:
            self.progress_done += 1
        upd = runs_pb2.RunUpdate(progress=runs_pb2.RunProgress(
            run_id=self.run.run_id, done=self.progress_done, total=self.progress_total, message=message))
        for q in self.watchers:
            q.put_nowait(upd)

    def skip(self, item: str, reason: str) -> None:
        if not any(s.item == item for s in self.run.skipped):
            self.run.skipped.add(item=item, reason=reason)


Body = Callable[[ActiveRun], Awaitable[None]]


async def run_probe(dispatcher: Dispatcher, ar: ActiveRun,
                    req: common_pb2.ProbeRequest) -> common_pb2.ProbeResult | None:
    """One probe of a run through the dispatcher; a cancel of the run cancels the probe on its agent
    (its tool is killed) instead of waiting for it to finish."""
    ar.probes += 1
    req.probe_id = req.probe_id or f"{ar.run.run_id}.{ar.probes}"

    async def on_cancel() -> None:
        await ar.cancel.wait()
        dispatcher.cancel(req.probe_id)

    watcher = asyncio.create_task(on_cancel())
    result = None
    try:
        async for upd in dispatcher.run(req):
            if upd.WhichOneof("body") == "result":
                result = upd.result
    except CniscopeError as exc:
        result = common_pb2.ProbeResult(ok=False, error=f"{exc.title}: {exc}", kind=req.kind)
    finally:
        watcher.cancel()
    return result


class RunManager:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.active: dict[str, ActiveRun] = {}

    async def db(self, fn: Callable[..., object], *args: object) -> object:
        return await self.store.call(fn, self.store.conn, *args)

    async def launch(self, run: runs_pb2.Run, body: Body) -> ActiveRun:
        run.run_id = run.run_id or uuid.uuid4().hex[:12]
        run.status = runs_pb2.RUN_STATUS_RUNNING
        run.started_unix_nano = time.time_ns()
        await self.db(rstore.insert_run, run)
        ar = ActiveRun(run)
        self.active[run.run_id] = ar
        ar.task = asyncio.create_task(self._execute(ar, body), name=f"run-{run.run_id}")
        return ar

    async def _execute(self, ar: ActiveRun, body: Body) -> None:
        run = ar.run
        try:
            await body(ar)
            run.status = runs_pb2.RUN_STATUS_CANCELLED if ar.cancel.is_set() else runs_pb2.RUN_STATUS_DONE
        except Stopped:
            run.status = runs_pb2.RUN_STATUS_CANCELLED
            run.error = "cancelled"
        except asyncio.CancelledError:
            run.status = runs_pb2.RUN_STATUS_CANCELLED
            run.error = "cancelled (collector stopping)"
        except CniscopeError as exc:
            run.status = runs_pb2.RUN_STATUS_FAILED
            run.error = f"{exc.title}: {exc}"
        except Exception as exc:  # a bug in a run is a failed run, never a dead collector
            log.exception("run %s failed", run.run_id)
            run.status = runs_pb2.RUN_STATUS_FAILED
            run.error = f"{type(exc).__name__}: {exc}"
        finally:
            run.finished_unix_nano = time.time_ns()
            try:
                await asyncio.shield(self._store_final(ar))
            finally:
                self.active.pop(run.run_id, None)
                final = runs_pb2.RunUpdate(run=run)
                for q in ar.watchers:
                    q.put_nowait(final)
                ar.done.set()

    async def _store_final(self, ar: ActiveRun) -> None:
        vals = await self.db(rstore.values, ar.run.run_id)
        assert isinstance(vals, dict)
        figs = {k: bm.aggregate(v) for k, v in vals.items() if v}
        ar.run.figures.clear()
        for k, f in figs.items():
            ar.run.figures[k].CopyFrom(runs_pb2.FigureStat(median=f.median, min=f.lo, max=f.hi, n=f.n))
        await self.db(rstore.finish, ar.run, figs)

    async def watch(self, ar: ActiveRun) -> AsyncGenerator[runs_pb2.RunUpdate, None]:
        """Progress then the final run. A watcher that goes away (client cancelled) stops the run."""
        q: asyncio.Queue[runs_pb2.RunUpdate] = asyncio.Queue()
        ar.watchers.append(q)
        finished = False
        try:
            if ar.done.is_set():
                finished = True
                yield runs_pb2.RunUpdate(run=ar.run)
                return
            while True:
                upd = await q.get()
                yield upd
                if upd.WhichOneof("body") == "run":
                    finished = True
                    return
        finally:
            ar.watchers.remove(q)
            if not finished and not ar.watchers:
                ar.cancel.set()

    async def cancel(self, run_id: str, wait_s: float = 120.0) -> runs_pb2.Run:
        ar = self.active.get(run_id)
        if ar is None:
            got = await self.db(rstore.get_run, run_id)
            assert isinstance(got, runs_pb2.Run)
            return got
        ar.cancel.set()
        try:
            await asyncio.wait_for(ar.done.wait(), wait_s)
        except TimeoutError:
            raise NotFound(f"run {run_id} did not stop within {wait_s:.0f}s") from None
        return ar.run

    async def stop_all(self) -> None:
        for ar in list(self.active.values()):
            ar.cancel.set()
        for ar in list(self.active.values()):
            try:
                await asyncio.wait_for(ar.done.wait(), 60)
            except TimeoutError:
                if ar.task is not None:
                    ar.task.cancel()
