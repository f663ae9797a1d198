"""Nothing an outsider sends pins the collector's memory (issue 13, findings 5 and 6).

The issue's hostile loads, scaled to finish in seconds, against a collector process: its peak
resident memory over each load stays within ``BOUND`` of its resident memory before it (the issue
measured +449 MB, +1,083 MB and +968 MB), and every refused caller gets a status that says why."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
import memory_kit as mk  # type: ignore[import-not-found]  # noqa: E402

BOUND = 96 * mk.MIB   # generous: the target is 64 MB, measured in BENCHMARKS.md
UNAUTHENTICATED, RESOURCE_EXHAUSTED = "16", "8"


@pytest.fixture
def collector(tmp_path: Path) -> mk.CollectorProcess:
    c = mk.start(tmp_path)
    yield c
    mk.stop(c)


def _grown(c: mk.CollectorProcess, base: int) -> str:
    return f"peak {c.peak / mk.MIB:.0f} MiB, {((c.peak - base) / mk.MIB):+.0f} MiB over {base / mk.MIB:.0f} MiB"


def test_requests_without_a_token_hold_no_memory(collector: mk.CollectorProcess) -> None:
    c = collector
    time.sleep(1.0)
    base = c.rss
    c.reset_peak()
    ends = mk.hostile_requests(c, "/cniscope.api.v1.Cluster/ListNodes", connections=160, hold=3.0)
    assert c.peak - base < BOUND, _grown(c, base)
    assert ends.count(UNAUTHENTICATED) == 160, ends[:5]   # refused before the request was read
    base = c.rss
    c.reset_peak()
    ends = mk.hostile_requests(c, "/grpc.health.v1.Health/Check", connections=160, hold=3.0)
    assert c.peak - base < BOUND, _grown(c, base)
    assert ends.count(RESOURCE_EXHAUSTED) >= 150, ends[:5]  # beyond the small pool of open reads


def test_a_watcher_that_never_reads_is_cut_off_and_ingest_is_bounded(collector: mk.CollectorProcess) -> None:
    c = collector
    time.sleep(1.0)
    base = c.rss
    c.reset_peak()
    h, sid = mk.stalled_watch(c)
    try:
        acked = asyncio.run(mk.agent_flood(c.address, "flood-w", batches=40, mib=3.2))
        assert acked == 40
        assert c.peak - base < BOUND, _grown(c, base)
    finally:
        h.close()
    base = c.rss
    c.reset_peak()

    async def two() -> list[int]:
        return list(await asyncio.gather(mk.agent_flood(c.address, "flood-a", 40, 3.6),
                                         mk.agent_flood(c.address, "flood-b", 40, 3.6)))

    assert asyncio.run(two()) == [40, 40]
    assert c.peak - base < BOUND, _grown(c, base)
