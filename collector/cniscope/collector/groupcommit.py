"""Group commit: batches arriving on many agent streams at once share one SQLite transaction.

Each stream still waits for its own batch to be durable before it is acknowledged; while one
transaction runs on the store thread, the next group gathers, so commit cost is paid per group and
not per batch (about 2-3x the ingest rate of one transaction per batch on this machine).

Near the database's size bound (``Store.must_wait``: at the bound while the storage upkeep frees
room, or out of the room its last size check left) commits wait: streams stop being acknowledged
and read, so agents hold their batches in their own bounded spools instead of the collector's
volume overflowing. A WAL that steady commits kept from resetting is cut back between two groups.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from cniscope.api.v1 import agent_pb2
from cniscope.collector.store import Store

if TYPE_CHECKING:
    from cniscope.collector.collector_metrics import IngestCounters

MAX_GROUP = 512
GATE_POLL = 0.05   # seconds between looks at a full database

log = logging.getLogger("cniscope.collector")

Done = Callable[[bool | BaseException], None]   # True durable, False a duplicate, or why it failed
Item = tuple[str, agent_pb2.Batch, int, Done]


class GroupCommitter:
    def __init__(self, store: Store, max_group: int = MAX_GROUP, counters: IngestCounters | None = None) -> None:
        self.store = store
        self.counters = counters
        self.max_group = max_group
        self._queue: list[Item] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def commit(self, node: str, batch: agent_pb2.Batch, received_ns: int) -> bool:
        """True once the batch is durable; False when it was a duplicate."""
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        def done(outcome: bool | BaseException) -> None:
            if not fut.done():
                if isinstance(outcome, BaseException):
                    fut.set_exception(outcome)
                else:
                    fut.set_result(outcome)

        self.submit(node, batch, received_ns, done)
        return await fut

    def submit(self, node: str, batch: agent_pb2.Batch, received_ns: int, done: Done) -> None:
        """Queue a batch; ``done`` is called once its transaction finished. Calls come in submission
        order, so a stream that keeps reading while earlier batches commit still acks them in order
        (a callback, not a future per batch: the ingest path is short of microseconds)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="group-commit")
        self._queue.append((node, batch, received_ns, done))
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                if self.store.wal_over_cap():  # commits kept the checkpointer from resetting the WAL
                    try:
                        await self.store.call(self.store.truncate_wal)
                    except Exception as exc:  # busy: the next group tries again
                        log.warning("cutting back the WAL failed: %s", exc)
                # rare: only near the size bound; the condition changes on the store thread and in
                # the upkeep, so it is looked at, not awaited
                while self.store.must_wait():  # noqa: ASYNC110
                    await asyncio.sleep(GATE_POLL)
                group, self._queue = self._queue[:self.max_group], self._queue[self.max_group:]
                outcomes: list[bool | BaseException]
                try:
                    outcomes = [*await self.store.call(self.store.commit_batches, [(n, b, t) for n, b, t, _ in group],
                                                       self.store.tx_bytes)]
                    if self.counters is not None:
                        self.counters.commits += 1
                    if len(outcomes) < len(group):  # the transaction reached its byte bound: the rest next
                        self._queue[:0] = group[len(outcomes):]
                        group = group[:len(outcomes)]
                except Exception as exc:  # nothing in the group is durable: every waiter learns it
                    outcomes = [exc for _ in group]
                for (*_, done), outcome in zip(group, outcomes, strict=True):
                    try:
                        done(outcome)
                    except Exception:  # one stream's bookkeeping never stops the others' acks
                        log.exception("commit callback failed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
