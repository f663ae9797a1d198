"""The agent's bounded spool of un-acknowledged batches.

Batches stay here until the collector acknowledges their seq (cumulative). When the bound (count or
bytes) forces the oldest out, they are counted in ``dropped`` — never silently lost.
"""

from __future__ import annotations

from collections import OrderedDict

from cniscope.api.v1 import agent_pb2


class Spool:
    def __init__(self, max_batches: int = 10_000, max_bytes: int = 32 * 1024 * 1024) -> None:
        if max_batches < 1 or max_bytes < 1:
            raise ValueError("spool bounds must be positive")
        self.max_batches = max_batches
        self.max_bytes = max_bytes
        self._items: OrderedDict[int, tuple[agent_pb2.Batch, int]] = OrderedDict()
        self._bytes = 0
        self.dropped = 0
        self.acked_seq = 0

    def add(self, batch: agent_pb2.Batch) -> None:
        size = batch.ByteSize()
        self._items[batch.seq] = (batch, size)
        self._bytes += size
        while len(self._items) > self.max_batches or (self._bytes > self.max_bytes and len(self._items) > 1):
            _, (_, sz) = self._items.popitem(last=False)
            self._bytes -= sz
            self.dropped += 1

    def ack(self, seq: int) -> int:
        """Forget every batch up to and including ``seq``; return how many were released."""
        if seq > self.acked_seq:
            self.acked_seq = seq
        released = 0
        while self._items:
            first = next(iter(self._items))
            if first > seq:
                break
            _, sz = self._items.pop(first)
            self._bytes -= sz
            released += 1
        return released

    def pending(self) -> list[agent_pb2.Batch]:
        return [b for b, _ in self._items.values()]

    @property
    def depth(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return self._bytes
