"""Inspection units: blocking functions of the host paths, returning typed findings, a one-line
summary of them and readiness items."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeAlias

from cniscope.api.v1 import capabilities_pb2 as cap
from cniscope.api.v1 import common_pb2
from cniscope.core.hostpaths import HostPaths

READY = common_pb2.READINESS_READY
NOT_READY = common_pb2.READINESS_NOT_READY
UNKNOWN = common_pb2.READINESS_UNKNOWN

UnitDetail: TypeAlias = (cap.KernelDetail | cap.BpfDetail | cap.NicDetail | cap.IptablesDetail
                          | cap.ClusterDetail
                          | cap.PrivilegesDetail | cap.ReadinessDetail | cap.CniFootprintDetail | cap.TracersDetail)
"""One of the messages of ``UnitReport.detail``."""


@dataclass
class UnitResult:
    detail: UnitDetail | None = None
    summary: str = ""   # what a person wants to know of the findings, on one line
    items: list[common_pb2.CapabilityItem] = field(default_factory=list)

    def item(self, name: str, state: int, reason: str) -> None:
        self.items.append(common_pb2.CapabilityItem(name=name, state=state, reason=reason))  # type: ignore[arg-type]


Inspector = Callable[[HostPaths], UnitResult]

# UnitReport.detail's case for each detail message
DETAIL_CASE: dict[str, str] = {f.message_type.full_name: f.name
                               for f in common_pb2.UnitReport.DESCRIPTOR.oneofs_by_name["detail"].fields
                               if f.message_type is not None}


def fill_report(report: common_pb2.UnitReport, res: UnitResult) -> None:
    """Put a unit's findings into its report: the typed detail in its case, and the summary."""
    if res.detail is not None:
        getattr(report, DETAIL_CASE[res.detail.DESCRIPTOR.full_name]).CopyFrom(res.detail)
    report.summary = res.summary


def count(n: int, what: str) -> str:
    """``1 map``, ``12 maps``, ``10,008 rules``."""
    return f"{n:,} {what}" if n == 1 else f"{n:,} {what}s"
