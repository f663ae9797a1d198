"""The agent's own footprint: CPU millicores (since the previous sample) and RSS bytes, read from
its own ``/proc/PID/stat`` as the CNI agents' footprint is."""

from __future__ import annotations

import os
import time
from pathlib import Path

from cniscope.agent.samplers.cni_footprint import read_stat
from cniscope.agent.samplers.sampler import make_sample
from cniscope.api.v1 import common_pb2

OWN_PROC = Path("/proc")   # this process's own procfs, whatever root the host's is mounted under


class AgentSelfSampler:
    name = "agent_self"

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._last_cpu = read_stat(OWN_PROC, self._pid).cpu_seconds
        self._last_wall = time.monotonic()

    def sample(self, now_ns: int) -> list[common_pb2.Sample]:
        st = read_stat(OWN_PROC, self._pid)
        wall = time.monotonic()
        dt = max(wall - self._last_wall, 1e-6)
        millicores = 1000.0 * (st.cpu_seconds - self._last_cpu) / dt
        self._last_cpu, self._last_wall = st.cpu_seconds, wall
        return [
            make_sample("agent_cpu_millicores", round(millicores, 2), now_ns),
            make_sample("agent_rss_bytes", st.rss_bytes, now_ns),
        ]
