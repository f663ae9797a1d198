"""A node's live figures are bounded: at most ``max_series`` series, and ``FIGURE_BYTES`` of their
names. A series beyond either is left out of the live state (its samples are still stored), and the
node is named in a warning at most once a minute — so one node cannot make every client's
ListNodes, GetNode and Watch answer too large to send."""

from __future__ import annotations

import time
from typing import Any

from cniscope.api.v1 import agent_pb2, common_pb2

FIGURE_BYTES = 1024 * 1024   # series names one node's live figures may hold, in bytes
LOG_SECONDS = 60.0           # a node over its cap is named at most this often
KEYS_MEMO = 20_000           # series keys remembered (the same series recur across nodes and batches)

_KEYS: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}


def series_key(s: common_pb2.Sample, memo: bool = True) -> str:
    """``name{k=v,...}`` with sorted labels; memoised (unless ``memo`` is false: a node over its series
    cap), since agents repeat the same series every batch."""
    labels = s.labels
    if not labels:
        return s.name
    # keys then lookups: a protobuf map's items() goes through a slow generic view (3x the cost)
    ck = (s.name, tuple([(k, labels[k]) for k in labels]))
    key = _KEYS.get(ck)
    if key is None:
        key = s.name + "{" + ",".join(f"{k}={v}" for k, v in sorted(ck[1])) + "}"
        if memo:
            if len(_KEYS) > KEYS_MEMO:
                _KEYS.clear()
            _KEYS[ck] = key
    return key


class SeriesCap:
    def __init__(self, max_series: int = 10_000) -> None:
        self.max_series = max_series
        self.used: dict[str, int] = {}        # node → bytes of its series names
        self.dropped: dict[str, int] = {}     # node → new series left out so far
        self._logged: dict[str, float] = {}

    def room(self, node: str, latest: dict[str, common_pb2.Sample], key: str) -> bool:
        """Whether the new series ``key`` fits within the node's caps (then it is counted)."""
        used = self.used.get(node, 0) + len(key) + 16
        if len(latest) >= self.max_series or used > FIGURE_BYTES:
            return False
        self.used[node] = used
        return True

    def merge(self, node: str, figures: Any, latest: dict[str, common_pb2.Sample],
              batches: list[agent_pb2.Batch], newest: agent_pb2.Batch) -> int:
        """Apply pending batches to a node's figures and latest samples: the newest batch defines every
        series whose name it carries, older ones only names it lacks. The number of new series left
        out over the caps."""
        dropped = 0
        cap = self.max_series

        def put(s: common_pb2.Sample) -> None:
            nonlocal dropped
            key = series_key(s, len(latest) < cap)
            if key in latest or self.room(node, latest, key):
                figures[key] = s.value
                latest[key] = s
            else:
                dropped += 1

        if len(batches) > 1:
            names = {s.name for s in newest.samples}
            for b in batches:
                if b is not newest:
                    for s in b.samples:
                        if s.name not in names:
                            put(s)
        for s in newest.samples:
            put(s)
        return dropped

    def over(self, node: str, dropped: int) -> str | None:
        """Count ``dropped`` series left out; the warning to log, when one is due."""
        total = self.dropped[node] = self.dropped.get(node, 0) + dropped
        now = time.monotonic()
        if now - self._logged.get(node, -LOG_SECONDS) < LOG_SECONDS:
            return None
        self._logged[node] = now
        return (f"node {node} sends more series than its cap of {self.max_series:,} series ({FIGURE_BYTES:,} "
                f"bytes of names) per node (CNISCOPE_MAX_NODE_SERIES): {total:,} new series left out of its "
                "live figures so far (still stored)")
