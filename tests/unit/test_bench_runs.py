"""Run storage and the run manager without a network: figures are the medians of the stored
repetitions, cancellation stops a run between steps and still runs its cleanup, runs left behind by
a stopped collector become cancelled, and runs resolve by id, prefix or label."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from cniscope.api.v1 import runs_pb2
from cniscope.collector.runs import run_store as rstore
from cniscope.collector.runs.manager import ActiveRun, RunManager
from cniscope.collector.runs.suite import choose_pairs, items
from cniscope.collector.store import Store
from cniscope.core import stats
from cniscope.core.errors import NotFound, ValidationError


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "c.db")
    yield s
    s.close()


async def test_figures_are_medians_of_stored_repetitions(store: Store) -> None:
    mgr = RunManager(store)
    reps = {"rtt.p50": [90.0, 130.0, 100.0], "tcp.gbps": [4.0, 3.0, 5.0, 4.5]}

    async def body(ar: ActiveRun) -> None:
        rows = [(m, i, "node1→node2", v, f"p{i}") for m, vs in reps.items() for i, v in enumerate(vs)]
        await mgr.db(rstore.add_values, ar.run.run_id, rows)

    ar = await mgr.launch(runs_pb2.Run(label="x", kind="suite", suite="quick", repeat=3), body)
    await asyncio.wait_for(ar.done.wait(), 20)
    run = await store.call(rstore.get_run, store.conn, ar.run.run_id)
    assert run.status == runs_pb2.RUN_STATUS_DONE
    stored = await store.call(rstore.values, store.conn, run.run_id)
    for k, vs in reps.items():
        assert sorted(stored[k]) == sorted(vs)
        f = run.figures[k]
        assert (f.median, f.min, f.max, f.n) == (stats.median(stored[k]), min(vs), max(vs), len(vs))
    assert run.figures["rtt.p50"].median == 100.0


async def test_cancel_stops_between_steps_and_cleanup_runs(store: Store) -> None:
    mgr = RunManager(store)
    steps: list[int] = []
    cleaned = asyncio.Event()
    started = asyncio.Event()

    async def body(ar: ActiveRun) -> None:
        try:
            for i in range(100):
                ar.check()
                steps.append(i)
                started.set()
                await asyncio.sleep(0.05)
        finally:
            cleaned.set()

    ar = await mgr.launch(runs_pb2.Run(label="long", kind="suite"), body)
    await started.wait()
    run = await mgr.cancel(ar.run.run_id)
    assert run.status == runs_pb2.RUN_STATUS_CANCELLED
    assert cleaned.is_set()
    assert len(steps) < 100
    assert not mgr.active
    stored = await store.call(rstore.get_run, store.conn, ar.run.run_id)
    assert stored.status == runs_pb2.RUN_STATUS_CANCELLED


async def test_a_watcher_leaving_cancels_the_run(store: Store) -> None:
    mgr = RunManager(store)

    async def body(ar: ActiveRun) -> None:
        for _ in range(200):
            ar.check()
            ar.emit("tick", step=True)
            await asyncio.sleep(0.02)

    ar = await mgr.launch(runs_pb2.Run(label="w", kind="suite"), body)
    gen = mgr.watch(ar)
    first = await gen.__anext__()
    assert first.WhichOneof("body") == "progress"
    await gen.aclose()  # the client went away (Ctrl-C)
    await asyncio.wait_for(ar.done.wait(), 20)
    assert ar.run.status == runs_pb2.RUN_STATUS_CANCELLED


async def test_failing_body_is_a_failed_run_with_the_reason(store: Store) -> None:
    mgr = RunManager(store)

    async def body(ar: ActiveRun) -> None:
        raise RuntimeError("boom")

    ar = await mgr.launch(runs_pb2.Run(label="f", kind="suite"), body)
    await asyncio.wait_for(ar.done.wait(), 20)
    run = await store.call(rstore.get_run, store.conn, ar.run.run_id)
    assert run.status == runs_pb2.RUN_STATUS_FAILED
    assert "boom" in run.error


def test_resolve_list_delete_and_interrupted(store: Store) -> None:
    c = store.conn
    for rid, label, t in (("abc123", "A: base", 1), ("abd999", "B: tuned", 2), ("zzz000", "A: base", 3)):
        rstore.insert_run(c, runs_pb2.Run(run_id=rid, label=label, kind="suite", status=runs_pb2.RUN_STATUS_RUNNING,
                                          started_unix_nano=t))
    assert rstore.resolve(c, "abc123") == "abc123"
    assert rstore.resolve(c, "abd") == "abd999"
    assert rstore.resolve(c, "A: base") == "zzz000"  # the latest with that label
    with pytest.raises(ValidationError, match="ambiguous"):
        rstore.resolve(c, "ab")
    with pytest.raises(NotFound):
        rstore.resolve(c, "nope")
    with pytest.raises(ValidationError):
        rstore.resolve(c, "")
    assert [r.run_id for r in rstore.list_runs(c)] == ["zzz000", "abd999", "abc123"]
    assert rstore.mark_interrupted(c, 10) == 3
    assert all(r.status == runs_pb2.RUN_STATUS_CANCELLED for r in rstore.list_runs(c))
    assert rstore.delete_run(c, "abd999")
    assert [r.run_id for r in rstore.list_runs(c)] == ["zzz000", "abc123"]


def test_like_wildcards_are_not_prefix_matches(store: Store) -> None:
    rstore.insert_run(store.conn, runs_pb2.Run(run_id="r_1", label="l", kind="suite"))
    with pytest.raises(NotFound):
        rstore.resolve(store.conn, "%")
    assert rstore.resolve(store.conn, "r_") == "r_1"


def test_suites_and_pairs() -> None:
    quick = {i.name for i in items("quick")}
    assert {"tcp", "udp", "rtt", "connect", "httpmax", "dns", "footprint", "census"} <= quick
    assert [i.name for i in items("standard", ["rtt"])] == ["rtt"]
    assert {i.name for i in items("standard")} >= {"http@1000", "http@5000"}
    with pytest.raises(ValidationError):
        items("huge")
    with pytest.raises(ValidationError):
        items("quick", ["nope"])
    assert choose_pairs(["node2", "node1", "node3"], "auto") == [("node1", "node2")]
    assert choose_pairs(["node2", "node1", "node3"], "all") == [("node1", "node2"), ("node2", "node3"), ("node3", "node1")]
    assert choose_pairs(["node1", "node2"], "node2:node1") == [("node2", "node1")]
    for bad in ("node1:node1", "node1", "node1:node9"):
        with pytest.raises(ValidationError):
            choose_pairs(["node1", "node2"], bad)
    with pytest.raises(ValidationError):
        choose_pairs(["node1"], "auto")
