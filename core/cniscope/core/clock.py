"""Time, behind a tiny interface so tests can freeze it."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ns(self) -> int: ...
    def monotonic(self) -> float: ...


class SystemClock:
    def now_ns(self) -> int:
        return time.time_ns()

    def monotonic(self) -> float:
        return time.monotonic()


class FrozenClock:
    """A clock that moves only when told to (tests, snapshots)."""

    def __init__(self, now_ns: int = 1_790_000_000_000_000_000) -> None:
        self._now = now_ns
        self._mono = 1000.0

    def now_ns(self) -> int:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += int(seconds * 1e9)
        self._mono += seconds


SYSTEM_CLOCK = SystemClock()
