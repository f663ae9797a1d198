"""Inspection units: blocking functions of the host paths, returning findings and readiness items."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cniscope.api.v1 import common_pb2
from cniscope.core.hostpaths import HostPaths

READY = common_pb2.READINESS_READY
NOT_READY = common_pb2.READINESS_NOT_READY
UNKNOWN = common_pb2.READINESS_UNKNOWN


@dataclass
class UnitResult:
    detail: dict[str, Any] = field(default_factory=dict)
    items: list[common_pb2.CapabilityItem] = field(default_factory=list)

    def item(self, name: str, state: int, reason: str) -> None:
        self.items.append(common_pb2.CapabilityItem(name=name, state=state, reason=reason))  # type: ignore[arg-type]


Inspector = Callable[[HostPaths], UnitResult]
