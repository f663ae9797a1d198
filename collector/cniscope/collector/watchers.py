"""One Watch call's backlog, bounded by bytes.

Events wait here until the call's writer takes them. A watcher that does not read (a stalled client,
or a client that never reads at all) is cut off once ``max_bytes`` of events wait for it: its call
ends with RESOURCE_EXHAUSTED saying so, and the client watches again for a fresh snapshot. Events are
shared between watchers, so many slow watchers cost little more than one.
"""

from __future__ import annotations

import asyncio
from collections import deque

from cniscope.api.v1 import cluster_pb2

WATCH_BYTES = 4 * 1024 * 1024   # encoded events one watcher may have waiting (decoded: about 4x that)
EVENT_OVERHEAD = 200            # bytes an event costs besides its encoding (objects, queue slot)


class Watcher:
    def __init__(self, include_samples: bool = False, max_bytes: int = WATCH_BYTES) -> None:
        self.include_samples = include_samples
        self.max_bytes = max_bytes
        self.queued = 0                                   # bytes waiting
        self.cut = ""                                     # why this watcher was cut off
        self._events: deque[tuple[cluster_pb2.ClusterEvent, int]] = deque()
        self._ready = asyncio.Event()

    def offer(self, ev: cluster_pb2.ClusterEvent, size: int, samples: bool) -> bool:
        """Queue ``ev`` (``size`` bytes); False when this watcher has just been cut off."""
        if samples and not self.include_samples:
            return True
        if self.queued + size > self.max_bytes:
            self.cut = (f"this watcher fell {self.queued + size:,} bytes behind (cap {self.max_bytes:,} "
                        "bytes of unread events): watch again for a fresh snapshot")
            self._events.clear()
            self.queued = 0
            self._ready.set()
            return False
        self._events.append((ev, size))
        self.queued += size
        self._ready.set()
        return True

    async def next(self) -> cluster_pb2.ClusterEvent | None:
        """The next event; None once this watcher has been cut off."""
        while not self._events:
            if self.cut:
                return None
            self._ready.clear()
            await self._ready.wait()
        ev, size = self._events.popleft()
        self.queued -= size
        return ev

    def __len__(self) -> int:
        return len(self._events)
