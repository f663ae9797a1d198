"""One Watch call's backlog, bounded by bytes, and the events in it encoded once for every watcher.

Events wait here until the call's writer takes them. A watcher that does not read (a stalled client,
or a client that never reads at all) is cut off once ``max_bytes`` of events wait for it: its call
ends with RESOURCE_EXHAUSTED saying so, and the client watches again for a fresh snapshot.

An event is queued as its encoding (a ``ClusterEvent`` on the wire), made once and shared by every
watcher: what waits is exactly what the bound counts, and the call's writer hands gRPC those bytes as
they are. A batch's samples are encoded straight from the batch (:func:`samples_event`), never copied
into a message of their own, and not at all when no watcher has room for them
(:meth:`Watcher.has_room`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable, Iterator

from google.protobuf.message import Message

from cniscope.api.v1 import agent_pb2, cluster_pb2, common_pb2

log = logging.getLogger("cniscope.collector")

WATCH_BYTES = 4 * 1024 * 1024   # encoded events one watcher may have waiting
EVENT_OVERHEAD = 200            # bytes an event costs besides its encoding (object, queue slot)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _tag(msg: type[Message], field: str) -> bytes:
    """The key of a length-delimited field (wire type 2)."""
    return _varint(msg.DESCRIPTOR.fields_by_name[field].number << 3 | 2)


_EVENT_TAGS = {f: _tag(cluster_pb2.ClusterEvent, f) for f in cluster_pb2.ClusterEvent.DESCRIPTOR.fields_by_name}
_NODE_NAME_TAG = _tag(cluster_pb2.NodeSamples, "node")
_SAMPLE_TAG = _tag(cluster_pb2.NodeSamples, "samples")


def encode_event(body: str, msg: Message) -> bytes:
    """``ClusterEvent(<body>=msg)`` encoded, without copying ``msg`` into an event first."""
    data = msg.SerializeToString()
    return _EVENT_TAGS[body] + _varint(len(data)) + data


def samples_event(node: str, samples: Iterable[common_pb2.Sample]) -> bytes:
    """``ClusterEvent(samples=NodeSamples(node=node, samples=samples))`` encoded, sample by sample: a
    copy of a large batch's samples in a message of its own costs about four times their encoding."""
    name = node.encode()
    parts = [_NODE_NAME_TAG, _varint(len(name)), name]
    for s in samples:
        data = s.SerializeToString()
        parts += (_SAMPLE_TAG, _varint(len(data)), data)
    body = b"".join(parts)
    return _EVENT_TAGS["samples"] + _varint(len(body)) + body


class Watcher:
    def __init__(self, include_samples: bool = False, max_bytes: int = WATCH_BYTES) -> None:
        self.include_samples = include_samples
        self.max_bytes = max_bytes
        self.queued = 0                                   # bytes waiting
        self.cut = ""                                     # why this watcher was cut off
        self._events: deque[bytes] = deque()
        self._ready = asyncio.Event()

    def has_room(self, size: int) -> bool:
        """Whether an event of about ``size`` encoded bytes still fits; when not, this watcher is cut
        off now (before the event is even built)."""
        if self.queued + size + EVENT_OVERHEAD <= self.max_bytes:
            return True
        self._cut_off(size + EVENT_OVERHEAD)
        return False

    def offer(self, event: bytes, samples: bool = False) -> bool:
        """Queue an encoded event; False when this watcher has just been cut off."""
        if samples and not self.include_samples:
            return True
        size = len(event) + EVENT_OVERHEAD
        if self.queued + size > self.max_bytes:
            self._cut_off(size)
            return False
        self._events.append(event)
        self.queued += size
        self._ready.set()
        return True

    def _cut_off(self, size: int) -> None:
        self.cut = (f"this watcher fell {self.queued + size:,} bytes behind (cap {self.max_bytes:,} "
                    "bytes of unread events): watch again for a fresh snapshot")
        self._events.clear()
        self.queued = 0
        self._ready.set()

    async def next(self) -> bytes | None:
        """The next event, encoded; None once this watcher has been cut off."""
        while not self._events:
            if self.cut:
                return None
            self._ready.clear()
            await self._ready.wait()
        event = self._events.popleft()
        self.queued -= len(event) + EVENT_OVERHEAD
        return event

    def __len__(self) -> int:
        return len(self._events)


class Watchers:
    """Every Watch call's backlog; each event is encoded once for all of them."""

    def __init__(self) -> None:
        self._all: set[Watcher] = set()

    def add(self, w: Watcher) -> None:
        self._all.add(w)

    def discard(self, w: Watcher) -> None:
        self._all.discard(w)

    def __len__(self) -> int:
        return len(self._all)

    def __iter__(self) -> Iterator[Watcher]:
        return iter(list(self._all))

    def publish(self, ev: cluster_pb2.ClusterEvent) -> None:
        """Queue ``ev`` for every watcher, encoded once."""
        if self._all:
            self._offer(ev.SerializeToString())

    def publish_node(self, st: cluster_pb2.NodeState) -> None:
        """Queue a node's state for every watcher (encoded as it is, not copied into an event)."""
        if self._all:
            self._offer(encode_event("node", st))

    def publish_samples(self, node: str, batch: agent_pb2.Batch) -> None:
        """Queue a batch's samples for the watchers that asked for them. A watcher with no room for
        them is cut off first, and the event is built only when one of them still has room."""
        wanting = [w for w in self._all if w.include_samples]
        if not wanting:
            return
        size = batch.ByteSize()   # about the event's size: a batch is mostly its samples
        room = False
        for w in wanting:
            if w.has_room(size):
                room = True
            else:
                self._drop(w)
        if room:
            self._offer(samples_event(node, batch.samples), samples=True)

    def _offer(self, event: bytes, samples: bool = False) -> None:
        for w in list(self._all):
            if not w.offer(event, samples):
                self._drop(w)

    def _drop(self, w: Watcher) -> None:
        """A watcher that cannot keep up is cut off (it watches again and gets a fresh snapshot)."""
        self._all.discard(w)
        log.warning("a watcher was cut off: %s", w.cut)
