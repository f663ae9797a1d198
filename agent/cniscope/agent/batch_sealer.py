"""Everything durable the agent sends travels in a sealed ``Batch``.

Samples, probe results and events wait here until the next seal; sealing stamps the batch with
``(boot_id, seq)``, puts it into the spool (where it stays until the collector acknowledges it) and
wakes the stream's send loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from cniscope.agent.spool import Spool
from cniscope.api.v1 import agent_pb2, common_pb2


class BatchSealer:
    def __init__(self, boot_id: str, spool: Spool) -> None:
        self.boot_id = boot_id
        self.spool = spool
        self.seq = 0                     # seq of the last sealed batch
        self.wake = asyncio.Event()      # set on every seal; the send loop clears it
        self.samples: list[common_pb2.Sample] = []
        self.results: list[common_pb2.ProbeResult] = []
        self.events: list[common_pb2.LogEvent] = []

    def add_samples(self, samples: Iterable[common_pb2.Sample]) -> None:
        self.samples.extend(samples)

    def add_result(self, result: common_pb2.ProbeResult) -> None:
        """A probe result is sealed at once: whoever waits for it should not wait for the next sample."""
        self.results.append(result)
        self.seal()

    def seal(self) -> agent_pb2.Batch | None:
        """Seal what is pending into the next batch (None when nothing is)."""
        if not (self.samples or self.results or self.events):
            return None
        self.seq += 1
        batch = agent_pb2.Batch(
            boot_id=self.boot_id, seq=self.seq, time_unix_nano=time.time_ns(),
            samples=self.samples, probe_results=self.results,
            events=self.events, spool_dropped=self.spool.dropped, spool_depth=self.spool.depth,
        )
        self.samples, self.results, self.events = [], [], []
        self.spool.add(batch)
        self.wake.set()
        return batch
