"""The agent's own CPU and RSS, read from its /proc/PID/stat, agree with what the kernel tells the
process about itself (``os.times``, ``/proc/self/statm``)."""

from __future__ import annotations

import os
import time

from cniscope.agent.samplers.agent_self import AgentSelfSampler


def test_cpu_and_rss_match_the_kernels_own_accounting() -> None:
    sampler = AgentSelfSampler()
    t0, cpu0 = time.monotonic(), sum(os.times()[:2])
    while sum(os.times()[:2]) - cpu0 < 0.3:   # burn 0.3 s of CPU
        pass
    got = {s.name: s.value for s in sampler.sample(time.time_ns())}
    wall, cpu = time.monotonic() - t0, sum(os.times()[:2]) - cpu0
    assert abs(got["agent_cpu_millicores"] * wall / 1000 - cpu) < 0.05, (got, wall, cpu)
    resident = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    assert abs(got["agent_rss_bytes"] - resident) < 0.05 * resident
    assert set(got) == {"agent_cpu_millicores", "agent_rss_bytes"}
