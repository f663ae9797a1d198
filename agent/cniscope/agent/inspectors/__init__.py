"""Inspector registry: one module per unit."""

from __future__ import annotations

from cniscope.agent.inspectors.bpf import inspect_bpf
from cniscope.agent.inspectors.cluster import inspect_cluster
from cniscope.agent.inspectors.cni_processes import inspect_footprint
from cniscope.agent.inspectors.iptables import inspect_iptables
from cniscope.agent.inspectors.kernel import inspect_kernel
from cniscope.agent.inspectors.nic import inspect_nic
from cniscope.agent.inspectors.privileges import inspect_privileges
from cniscope.agent.inspectors.readiness import inspect_readiness
from cniscope.agent.inspectors.tracer_readiness import inspect_tracers
from cniscope.agent.inspectors.unit import Inspector
from cniscope.core.registry import Registry

INSPECTORS: Registry[Inspector] = Registry("inspector")
INSPECTORS.register("kernel", inspect_kernel)
INSPECTORS.register("bpf", inspect_bpf)
INSPECTORS.register("nic", inspect_nic)
INSPECTORS.register("iptables", inspect_iptables)
INSPECTORS.register("cluster", inspect_cluster)
INSPECTORS.register("privileges", inspect_privileges)
INSPECTORS.register("readiness", inspect_readiness)
INSPECTORS.register("cni_footprint", inspect_footprint)
INSPECTORS.register("tracers", inspect_tracers)
