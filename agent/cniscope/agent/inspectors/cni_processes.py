"""The CNI processes found on this node, for the node report (the sampler streams their CPU/RSS)."""

from __future__ import annotations

from cniscope.agent.inspectors.unit import UnitResult
from cniscope.agent.samplers.cni_footprint import CniFootprintSampler
from cniscope.api.v1 import capabilities_pb2 as cap
from cniscope.core.errors import Unavailable
from cniscope.core.hostpaths import HostPaths


def summarize(d: cap.CniFootprintDetail) -> str:
    """``cilium-agent pid 812 rss 180 MiB, kube-proxy pid 640 rss 41 MiB``."""
    return ", ".join(f"{p.process} pid {p.pid} rss {p.rss_bytes / 2**20:.0f} MiB" for p in d.processes)


def inspect_footprint(paths: HostPaths) -> UnitResult:
    sampler = CniFootprintSampler(paths)
    rows = sampler.snapshot()
    if not rows:
        raise Unavailable(f"no CNI agent process ({', '.join(sampler.names)}) under {paths.proc}")
    d = cap.CniFootprintDetail(processes=rows)
    return UnitResult(d, summarize(d))
