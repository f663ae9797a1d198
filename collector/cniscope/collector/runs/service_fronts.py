"""The Services that front the agents' probe pods, for a suite's ``service`` path items.

An item on the ``service`` path (``svc_connect``, ``svc_http``) goes from the source node's probe pod
to the ClusterIP of a Service whose endpoints are the target node's probe pod, so each connection
crosses the Service datapath (kube-proxy's NAT rules, or a socket load balancer) on its way. Which
Services those are is given to the collector at construction, like the lab's service backends:
``cniscope collector --lab NAME`` hands it the lab's (``lab up`` programs one per node). Without
them the items are skipped, saying why.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

NO_FRONTS = ("does not apply: no Service fronts the agents' probe pods (a lab programs one per node: "
             "cniscope lab up; a cluster's service path is not offered yet)")


@dataclass(frozen=True)
class Fronts:
    addresses: Mapping[str, str]   # target node → ClusterIP of the Service fronting its probe pod
    others: int                    # further Services the datapath holds (fillers), for scale
    datapath: str                  # what translates the ClusterIPs, as the lab programmed them

    def describe(self) -> str:
        return (f"ClusterIP per node ({len(self.addresses)} Services) + {self.others:,} filler Services, "
                f"{self.datapath}")


# called in a thread when a run with service-path items starts; None: no fronting Services here
FrontsSource = Callable[[], Fronts | None]
