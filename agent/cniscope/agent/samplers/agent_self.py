"""The agent's own footprint: CPU millicores (since the previous sample) and RSS bytes."""

from __future__ import annotations

import time

import psutil

from cniscope.agent.samplers.sampler import make_sample
from cniscope.api.v1 import common_pb2


class AgentSelfSampler:
    name = "agent_self"

    def __init__(self) -> None:
        self._proc = psutil.Process()
        t = self._proc.cpu_times()
        self._last_cpu = t.user + t.system
        self._last_wall = time.monotonic()

    def sample(self, now_ns: int) -> list[common_pb2.Sample]:
        with self._proc.oneshot():
            t = self._proc.cpu_times()
            rss = self._proc.memory_info().rss
        cpu = t.user + t.system
        wall = time.monotonic()
        dt = max(wall - self._last_wall, 1e-6)
        millicores = 1000.0 * (cpu - self._last_cpu) / dt
        self._last_cpu, self._last_wall = cpu, wall
        return [
            make_sample("agent_cpu_millicores", round(millicores, 2), now_ns),
            make_sample("agent_rss_bytes", rss, now_ns),
        ]
