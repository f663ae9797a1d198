"""Clock skew per node, from the agent's send timestamp and the collector's receive time.

``agent_ns - received_ns`` is the skew minus the one-way delay (never negative), so the largest value
over a short window of fresh batches is the best estimate: a batch that waited in the spool only
makes its value smaller and never fools the estimate.
"""

from __future__ import annotations

from collections import deque

SKEW_LIMIT_MS = 50.0
WINDOW = 16


class SkewTracker:
    def __init__(self, limit_ms: float = SKEW_LIMIT_MS, window: int = WINDOW) -> None:
        self.limit_ms = limit_ms
        self.window = window
        self._obs: dict[str, deque[float]] = {}

    def reset(self, node: str) -> None:
        self._obs.pop(node, None)

    def observe(self, node: str, agent_ns: int, received_ns: int) -> float:
        """Record one observation; return the current estimate in ms (agent minus collector)."""
        q = self._obs.setdefault(node, deque(maxlen=self.window))
        q.append((agent_ns - received_ns) / 1e6)
        return round(max(q), 3)

    def flagged(self, skew_ms: float) -> bool:
        return abs(skew_ms) > self.limit_ms
