"""Where a service-scaling run's Services come from: the :class:`ServiceBackend` protocol, what one
step programmed (:class:`Applied`), and which backends a request may use.

Kubernetes (Services through the API, :mod:`.k8s_services`) is the collector's own backend. Any
other backend is given to the collector at construction as a named factory (:data:`LabBackends`):
the ``cniscope collector --lab NAME`` command hands it the lab's kube-proxy-style rule loaders, so
the collector itself never knows how a lab is built. ``auto`` picks the first named backend when the
connected agents are lab namespaces, Kubernetes otherwise; a lab backend outside the lab or
Kubernetes inside it is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cniscope.api.v1 import runs_pb2
from cniscope.core.errors import Unavailable, ValidationError

KUBERNETES = "kubernetes"


@dataclass(frozen=True)
class Applied:
    target_ip: str               # the last Service: the end of a linear chain
    target_port: int
    rules: dict[str, int]        # NAT rules per node, counted from the kernel after loading
    sync_seconds: float          # slowest node's load
    first_ip: str = ""           # the first Service: the head of a linear chain
    signal: str = "NAT rules"    # what ``rules`` counts
    # kube-proxy's own syncs during the step, per node: (Δ syncs, Δ seconds syncing), from its /metrics
    proxy_sync: dict[str, tuple[float, float]] = field(default_factory=dict)
    proxy_note: str = ""         # why a node has no kube-proxy figure


class ServiceBackend(Protocol):
    name: str

    def prepare(self) -> None:
        """Remove what an earlier interrupted or crashed run left behind (blocking)."""
        ...

    def apply(self, n: int) -> Applied:
        """Make exactly ``n`` Services exist and the data plane programmed on every node (blocking)."""
        ...

    def cleanup(self) -> None:
        """Remove every Service and rule this backend created (blocking, idempotent)."""
        ...


# backend name → factory taking the request's lab name ("" = the lab the collector serves)
LabBackends = Mapping[str, Callable[[str], ServiceBackend]]


def resolve_backends(req: runs_pb2.ServiceScalingRequest, in_lab: bool, lab: Sequence[str] = ()) -> list[str]:
    """The backends a request names, ``auto`` resolved: the first of ``lab`` (the lab backends this
    collector was given) when the agents are lab namespaces, Kubernetes otherwise."""
    wanted = list(req.backends) or [req.backend or "auto"]
    out = []
    for b in wanted:
        if b == "auto" and not in_lab:
            out.append(KUBERNETES)
        elif b == "auto" or b in lab:
            out.append(_lab_backend(b, in_lab, lab))
        elif b in (KUBERNETES, "k8s"):
            if in_lab:
                raise Unavailable(f"backend {KUBERNETES} creates Services through the API, but the connected agents "
                                  "are lab namespaces whose data plane never sees them; use auto"
                                  + (f" or {', '.join(lab)}" if lab else ""))
            out.append(KUBERNETES)
        else:
            raise ValidationError(f"backend must be one of {', '.join(['auto', KUBERNETES, *lab])}; got {b!r}")
    return list(dict.fromkeys(out))


def _lab_backend(b: str, in_lab: bool, lab: Sequence[str]) -> str:
    if not in_lab:
        raise Unavailable(f"backend {b} writes kube-proxy rules into lab namespaces, but the connected "
                          f"agents are not a lab; use --backend {KUBERNETES} (or auto)")
    if not lab:
        raise Unavailable("the connected agents are lab namespaces, but this collector was started without "
                          "the lab's service backends (cniscope collector --lab NAME)")
    return lab[0] if b == "auto" else b
