"""Token buckets for people-facing commands (RunProbe): ``rate`` per second, bursts up to ``burst``, one
bucket per client."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._t = clock()
        self.refused = 0

    def take(self) -> float:
        """0.0 when a token was taken; otherwise the seconds until one is available."""
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._t) * self.rate)
        self._t = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        self.refused += 1
        return (1.0 - self._tokens) / self.rate


class ClientBuckets:
    """One :class:`TokenBucket` per client, so one busy client cannot starve the others. A client is
    its identity and its address; at most ``max_clients`` buckets are kept, the least recently used
    (a full bucket is the same as a new one) forgotten first."""

    def __init__(self, rate: float, burst: int, max_clients: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        TokenBucket(rate, burst, clock)  # the same checks on rate and burst
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self.refused = 0

    def take(self, client: str) -> float:
        b = self._buckets.pop(client, None)
        if b is None:
            b = TokenBucket(self.rate, self.burst, self._clock)
            while len(self._buckets) >= self.max_clients:
                del self._buckets[next(iter(self._buckets))]
        self._buckets[client] = b  # most recently used last
        wait = b.take()
        if wait > 0:
            self.refused += 1
        return wait


def client_key(principal_name: str, peer: str) -> str:
    """The rate-limit key of a call: who (identity) and from where (address without the port)."""
    host = peer.rsplit(":", 1)[0] if peer.startswith(("ipv4:", "ipv6:")) else peer
    return f"{principal_name}@{host}"
