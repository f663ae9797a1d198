"""Which features this agent's capabilities allow: one readiness item per feature, "missing CAP_X"
for those it cannot run. The agent runs with a short capability list instead of privileged mode;
this is where an operator sees what a dropped capability costs."""

from __future__ import annotations

import platform

from cniscope.agent import caps
from cniscope.agent.inspectors.unit import NOT_READY, READY, UnitResult
from cniscope.core.hostpaths import HostPaths


def inspect_privileges(paths: HostPaths) -> UnitResult:
    res = UnitResult()
    have = caps.effective()     # this process's own status, not the host's /proc
    release = platform.release()
    features = {}
    for feature, needed in caps.FEATURE_CAPS.items():
        lack = caps.feature_missing(feature, have, release)
        features[feature] = caps.reason(lack) if lack else "ok"
        if lack:
            res.item(f"cap_{feature}", NOT_READY, "unavailable: " + caps.reason(lack))
        else:
            res.item(f"cap_{feature}", READY, "has " + ", ".join(f"CAP_{c}" for c in needed))
    res.detail = {"effective": sorted(have), "features": features}
    return res
