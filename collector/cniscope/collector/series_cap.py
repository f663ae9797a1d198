"""A node's live figures are bounded: at most ``max_series`` series, and ``FIGURE_BYTES`` of their
names. A series beyond either is left out of the live state (its samples are still stored), and the
node is named in a warning at most once a minute — so one node cannot make every client's
ListNodes, GetNode and Watch answer too large to send."""

from __future__ import annotations

import time

from cniscope.api.v1 import common_pb2

FIGURE_BYTES = 1024 * 1024   # series names one node's live figures may hold, in bytes
LOG_SECONDS = 60.0           # a node over its cap is named at most this often


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
