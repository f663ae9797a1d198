"""Reconnect delays: exponential with jitter, so a fleet never retries in lock-step."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    initial: float = 1.0
    factor: float = 1.6
    cap: float = 60.0
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self) -> float:
        base = min(self.cap, self.initial * (self.factor ** self.attempt))
        self.attempt += 1
        return max(0.0, base * (1.0 + self.rng.uniform(-self.jitter, self.jitter)))

    def reset(self) -> None:
        self.attempt = 0
