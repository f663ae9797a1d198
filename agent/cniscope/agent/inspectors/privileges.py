"""Which features this agent's capabilities allow: one readiness item per feature, "missing CAP_X"
for those it cannot run. The agent runs with a short capability list instead of privileged mode;
this is where an operator sees what a dropped capability costs."""

from __future__ import annotations

import platform

from cniscope.agent import caps
from cniscope.agent.inspectors.unit import NOT_READY, READY, UnitResult
from cniscope.api.v1 import capabilities_pb2 as cap
from cniscope.core.hostpaths import HostPaths


def summarize(d: cap.PrivilegesDetail) -> str:
    """``all 7 features allowed`` or ``5 of 7 features allowed; tracers missing CAP_BPF, CAP_PERFMON``."""
    lacking = [f for f in d.features if f.missing]
    if not lacking:
        return f"all {len(d.features)} features allowed"
    return (f"{len(d.features) - len(lacking)} of {len(d.features)} features allowed; "
            + "; ".join(f"{f.feature} {caps.reason(f.missing)}" for f in lacking))


def inspect_privileges(paths: HostPaths) -> UnitResult:
    have = caps.effective()     # this process's own status, not the host's /proc
    release = platform.release()
    d = cap.PrivilegesDetail(effective=sorted(have))
    res = UnitResult(d)
    for feature, needed in caps.FEATURE_CAPS.items():
        lack = caps.feature_missing(feature, have, release)
        d.features.add(feature=feature, needs=needed, missing=lack)
        if lack:
            res.item(f"cap_{feature}", NOT_READY, "unavailable: " + caps.reason(lack))
        else:
            res.item(f"cap_{feature}", READY, "has " + ", ".join(f"CAP_{c}" for c in needed))
    res.summary = summarize(d)
    return res
