"""One node of a lab: its name, network namespace, host address and the pods behind it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LabNode:
    index: int
    name: str
    netns: str
    host_ip: str
    pods: list[dict[str, str]] = field(default_factory=list)  # [{"netns":..., "ip":...}]

    @property
    def pod_netns(self) -> str:
        return self.pods[0]["netns"]

    @property
    def pod_ip(self) -> str:
        return self.pods[0]["ip"]
