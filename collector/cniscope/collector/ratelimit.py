"""A token bucket for people-facing commands (RunProbe): ``rate`` per second, bursts up to ``burst``."""

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
