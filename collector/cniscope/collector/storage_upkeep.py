"""The collector's storage upkeep: compaction of the head into chunks, and the size bound.

Every ``CHECK_EVERY`` seconds the database is measured; every ``COMPACT_EVERY`` seconds heads older
than ``CHUNK_SECONDS`` are compacted. Near the bound, :mod:`.size_guard` frees the oldest data in its
order. Each step is one short call on the store's writer thread, so ingest commits interleave.
:class:`StorageMetrics` puts the figures in the collector's ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

from cniscope.collector import compaction, size_guard
from cniscope.collector.compaction import CompactReport
from cniscope.collector.store import Store
from cniscope.core.metrics_catalog import STORAGE_FAMILIES

log = logging.getLogger("cniscope.collector.storage")

CHECK_EVERY = 2.0            # seconds between size checks
PROTECTED_EVERY = 30.0       # seconds between counts of what size pruning never deletes
GROWTH_WINDOW = 900.0        # seconds of size history behind the time-to-full estimate
PROTECTED_WARN = 0.5         # warn when protected data alone takes this share of the budget


@dataclass
class StorageUsage:
    max_bytes: int
    disk_bytes: int = 0
    live_bytes: int = 0
    raw_sample_bytes: int = 0
    protected_bytes: int = 0
    time_to_full_s: float = math.inf
    pruned_samples: int = 0
    pruned_aggregates: int = 0
    pruned_events: int = 0
    compacted_samples: int = 0


class StorageUpkeep:
    def __init__(self, store: Store, max_bytes: int, *, chunk_seconds: float = compaction.CHUNK_SECONDS,
                 compact_every: float = compaction.COMPACT_EVERY, check_every: float = CHECK_EVERY) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.chunk_seconds = chunk_seconds
        self.compact_every = compact_every
        self.check_every = check_every
        self.usage = StorageUsage(max_bytes)
        self._history: deque[tuple[float, int]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._warned = False
        self._protected_at = -math.inf
        self.on_usage: Callable[[StorageUsage], None] | None = None   # told after every measurement
        store.set_wal_limit(size_guard.wal_limit(max_bytes))
        store.wal_cap = 2 * size_guard.wal_limit(max_bytes)
        store.tx_bytes = size_guard.step_bytes(max_bytes)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="storage-upkeep")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self) -> None:
        next_compact = time.monotonic() + self.compact_every
        while True:
            await asyncio.sleep(self.check_every)
            try:
                await self.enforce()
                if time.monotonic() >= next_compact:
                    # a pass stops at its time budget (the size is checked in between); what is left
                    # is still due next time
                    done = await self.compact(max_seconds=self.check_every)
                    if done:
                        next_compact = time.monotonic() + self.compact_every
            except Exception:  # upkeep never stops ingest; the next pass tries again
                log.exception("storage upkeep failed")

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.store.call(fn, self.store.conn, *args)

    async def compact(self, received_before_ns: int | None = None, max_seconds: float | None = None) -> bool:
        """Compact every head due (all of them with ``received_before_ns`` in the future), up to where
        each ended when the pass began; False when ``max_seconds`` ran out first."""
        before = received_before_ns if received_before_ns is not None else (
            time.time_ns() - int(self.chunk_seconds * 1e9))
        deadline = math.inf if max_seconds is None else time.monotonic() + max_seconds
        total = CompactReport()
        try:
            for node, boot, upto in await self._call(compaction.due_heads, before):
                while (rep := await self._call(compaction.compact_step, node, boot, upto, self.store.watermarks,
                                               compaction.MAX_CHUNK_SAMPLES, self.store.tx_bytes)).batches:
                    total.add(rep)
                    await self._cut_wal()
                    if time.monotonic() >= deadline:
                        return False
            return True
        finally:
            self.usage.compacted_samples += total.samples

    async def enforce(self) -> bool:
        """Measure; near the bound free the oldest data. True when something was freed."""
        sizes = await self._measure()
        freed = False
        if sizes.live >= size_guard.HIGH * sizes.budget:
            self.store.over_bound = True  # commits wait while room is made
            try:
                freed = await self._free(sizes)
            finally:
                self.store.over_bound = False
        sizes = await self._measure()
        if sizes.file > sizes.budget and sizes.file > sizes.live:  # a lowered bound: give pages back
            await self._call(size_guard.shrink, (sizes.file - sizes.live) // 4096 + 1)
            sizes = await self._measure()
        await self._account(sizes, freed)
        return freed

    async def _measure(self) -> size_guard.Sizes:
        """The sizes now, and the room commits have until the next check; a WAL grown past its share
        (commits that never left a checkpoint the chance to finish) is checkpointed and cut back first."""
        await self._cut_wal()
        sizes: size_guard.Sizes = await self.store.call(self._measure_now)
        return sizes

    def _measure_now(self) -> size_guard.Sizes:
        sizes = size_guard.measure(self.store.conn, self.store.path, self.max_bytes)
        self.store.set_room(max(0.0, size_guard.HIGH * sizes.budget - sizes.live))
        return sizes

    async def _cut_wal(self) -> None:
        try:
            wal = os.stat(self.store.path + "-wal").st_size
        except OSError:
            return
        if wal > size_guard.wal_limit(self.max_bytes):
            await self.store.call(self.store.truncate_wal)

    async def _free(self, sizes: size_guard.Sizes) -> bool:
        target = size_guard.LOW * sizes.budget
        await self.compact(time.time_ns() + 1)
        floor = time.time_ns() - int(size_guard.RAW_FLOOR_SECONDS * 1e9)
        u = self.usage
        step = size_guard.step_bytes(self.max_bytes)
        stages: list[tuple[Callable[..., int], tuple[Any, ...], str]] = [
            (size_guard.prune_oldest_raw, (floor, step), "pruned_samples"),
            (size_guard.prune_oldest_aggregates, (step,), "pruned_aggregates"),
            (size_guard.prune_oldest_events, (), "pruned_events"),
            (size_guard.prune_oldest_raw, (None, step), "pruned_samples"),
        ]
        before = (u.pruned_samples, u.pruned_aggregates, u.pruned_events)
        for fn, args, counter in stages:
            while sizes.live > target:
                n = await self._call(fn, *args)
                if not n:
                    break
                setattr(u, counter, getattr(u, counter) + n)
                sizes = await self._measure()
            if sizes.live <= target:
                break
        if (u.pruned_samples, u.pruned_aggregates, u.pruned_events) != before:
            log.info("database near its bound (%d of %d bytes in use): %d raw samples aggregated, %d aggregates "
                     "and %d log events deleted so far", sizes.live, self.max_bytes, u.pruned_samples,
                     u.pruned_aggregates, u.pruned_events)
            return True
        return False

    async def _account(self, sizes: size_guard.Sizes, freed: bool) -> None:
        u = self.usage
        u.disk_bytes, u.live_bytes = sizes.disk, sizes.live
        now = time.monotonic()
        if freed or now - self._protected_at >= PROTECTED_EVERY:
            self._protected_at = now
            raw, prunable = await self._call(size_guard.prunable_bytes)
            u.raw_sample_bytes, u.protected_bytes = raw, max(0, sizes.live - prunable)
            near = u.protected_bytes >= PROTECTED_WARN * sizes.budget
            if near and not self._warned:
                log.warning("runs, probe results and capability reports alone take %d of the database's %d-byte "
                            "bound; they are never pruned: delete old runs or raise max_db_bytes",
                            u.protected_bytes, self.max_bytes)
            self._warned = near
        self._history.append((now, sizes.live))
        while self._history and now - self._history[0][0] > GROWTH_WINDOW:
            self._history.popleft()
        t0, live0 = self._history[0]
        rate = (sizes.live - live0) / (now - t0) if now > t0 else 0.0
        if freed or sizes.live >= size_guard.HIGH * sizes.budget:
            u.time_to_full_s = 0.0
        elif rate > 0:
            u.time_to_full_s = (size_guard.HIGH * sizes.budget - sizes.live) / rate
        else:
            u.time_to_full_s = math.inf
        if self.on_usage is not None:
            self.on_usage(u)


class StorageMetrics:
    """The database's size, bound, time-to-full and what the bound pruned, for ``/metrics``."""

    def __init__(self, usage: Callable[[], StorageUsage]) -> None:
        self.usage = usage

    def collect(self) -> Iterator[Any]:
        u = self.usage()
        values = {"cniscope_collector_db_bytes": u.disk_bytes, "cniscope_collector_db_max_bytes": u.max_bytes,
                  "cniscope_collector_db_time_to_full_seconds": u.time_to_full_s,
                  "cniscope_collector_db_raw_sample_bytes": u.raw_sample_bytes,
                  "cniscope_collector_db_protected_bytes": u.protected_bytes,
                  "cniscope_collector_db_pruned_samples": u.pruned_samples,
                  "cniscope_collector_db_pruned_aggregates": u.pruned_aggregates,
                  "cniscope_collector_db_pruned_events": u.pruned_events}
        for f in STORAGE_FAMILIES:
            if f.type == "counter":
                yield CounterMetricFamily(f.name, f.help, value=float(values[f.name]))
            else:
                yield GaugeMetricFamily(f.name, f.help, value=float(values[f.name]))
