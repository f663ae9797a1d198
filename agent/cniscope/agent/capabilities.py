"""The capability report the agent sends in Hello and on ``refresh capabilities``.

Inspection units (iptables/nft census, eBPF census, NIC/XDP, kernel readiness, tracers) register in
``cniscope.agent.inspectors``; this module runs every registered unit, times it, and turns
"does not apply" into ``unavailable: <reason>`` instead of a failure.
"""

from __future__ import annotations

import json
import platform
import time

from cniscope.agent.inspectors import INSPECTORS
from cniscope.api.v1 import common_pb2
from cniscope.core import caps
from cniscope.core.errors import Unavailable
from cniscope.core.hostpaths import HostPaths


def collect(paths: HostPaths | None = None, only: list[str] | None = None) -> common_pb2.CapabilityReport:
    hp = paths or HostPaths.from_env()
    report = common_pb2.CapabilityReport(time_unix_nano=time.time_ns(), kernel=platform.release())
    for name, unit in INSPECTORS.items():
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        ur = common_pb2.UnitReport(name=name)
        try:
            caps.require(*(caps.required_by(unit) or caps.FEATURE_CAPS.get(name, ())))
            res = unit(hp)
            ur.ok, ur.available = True, True
            ur.detail_json = json.dumps(res.detail, sort_keys=True, default=str)
            for item in res.items:
                report.items.append(item)
        except Unavailable as exc:
            ur.ok, ur.available, ur.error = True, False, f"unavailable: {exc}"
        except Exception as exc:  # one unit's failure never takes the report down
            ur.ok, ur.available, ur.error = False, True, f"{type(exc).__name__}: {exc}"
        ur.duration_seconds = round(time.perf_counter() - t0, 6)
        report.units.append(ur)
    return report
