"""Every ``sample_interval``: run every sampler in a worker thread and seal what they return.

Polls never overlap and never pile up: a slow round shifts the schedule instead of queueing rounds.
One sampler's failure costs that sampler's samples only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from cniscope.agent.batch_sealer import BatchSealer
from cniscope.agent.samplers.sampler import Sampler
from cniscope.api.v1 import common_pb2

log = logging.getLogger("cniscope.agent")


class SampleLoop:
    def __init__(self, samplers: Sequence[Sampler], sealer: BatchSealer, interval: float,
                 own_samples: Callable[[int], list[common_pb2.Sample]]) -> None:
        """``own_samples(now_ns)`` adds the agent's own figures (spool, stream) to every batch."""
        self.samplers = list(samplers)
        self.sealer = sealer
        self.interval = max(0.1, interval)
        self.own_samples = own_samples
        self.last: list[common_pb2.Sample] = []   # the samplers' latest round, for /metrics

    def sample_all(self) -> list[common_pb2.Sample]:
        now = time.time_ns()
        out: list[common_pb2.Sample] = []
        for s in self.samplers:
            try:
                out.extend(s.sample(now))
            except Exception as exc:  # one sampler never stops the others
                log.warning("sampler %s failed: %s", s.name, exc)
        return out

    async def run(self) -> None:
        next_t = time.monotonic()
        while True:
            samples = await asyncio.to_thread(self.sample_all)
            self.last = samples
            self.sealer.add_samples(samples)
            self.sealer.add_samples(self.own_samples(time.time_ns()))
            self.sealer.seal()
            next_t += self.interval
            delay = next_t - time.monotonic()
            if delay < 0:  # polls never overlap and never pile up
                next_t = time.monotonic()
                delay = 0
            await asyncio.sleep(delay)
