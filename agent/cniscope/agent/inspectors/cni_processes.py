"""The CNI processes found on this node, for the node report (the sampler streams their CPU/RSS)."""

from __future__ import annotations

from cniscope.agent.inspectors.unit import UnitResult
from cniscope.agent.samplers.cni_footprint import CniFootprintSampler
from cniscope.core.errors import Unavailable
from cniscope.core.hostpaths import HostPaths


def inspect_footprint(paths: HostPaths) -> UnitResult:
    sampler = CniFootprintSampler(paths)
    rows = sampler.snapshot()
    if not rows:
        raise Unavailable(f"no CNI agent process ({', '.join(sampler.names)}) under {paths.proc}")
    return UnitResult(detail={"processes": rows})
