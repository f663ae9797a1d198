"""The continuous light mesh: every ``mesh_interval`` each agent pings a bounded subset of peers.

The subset is chosen by rendezvous hashing of (this node, peer): stable from round to round (so a
pair's RTT forms a time series), spread evenly (every node is chosen by about ``fanout`` others),
and bounded — a cluster of N nodes pays N × fanout probes per round, not N². Probes within a round
are staggered evenly across the interval, the round start carries jitter, and a round is skipped
while a bandwidth probe holds this node (its RTT would describe the load, not the network).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable

MESH_PARAMS = {"count": "5", "interval": "0.1", "timeout": "1"}


def _score(node: str, peer: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{node}\x00{peer}".encode()).digest()[:8], "big")


def choose_peers(node: str, peers: Iterable[str], fanout: int) -> list[str]:
    """The ``fanout`` peers with the highest rendezvous score for ``node`` (never ``node`` itself)."""
    others = sorted({p for p in peers if p and p != node})
    if fanout <= 0:
        return []
    ranked = sorted(others, key=lambda p: _score(node, p), reverse=True)
    return sorted(ranked[:fanout])


def offsets(count: int, interval: float, jitter: float, rng: random.Random) -> list[float]:
    """Start offsets (seconds into the round) for ``count`` probes spread across ``interval``."""
    if count <= 0:
        return []
    step = interval / count
    return [min(interval * 0.999, max(0.0, i * step + rng.uniform(-jitter, jitter) * step))
            for i in range(count)]
