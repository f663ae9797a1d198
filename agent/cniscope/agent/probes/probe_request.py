"""From a probe request to a probe context: the agent's own checks before any packet leaves.

The kind's row in the probe table (``cniscope.core.probekinds``) decides: its parameters are parsed
and bounded here, once; a kind that needs a target gets the target node's address for the path (or
the explicit address); a kind whose target is optional (dns asks a resolver) takes it from its
target parameter or the explicit address, if any. Every address is checked against the peers and the
allow-list, and the features the kind and the path need against this process's capabilities.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cniscope.agent import caps
from cniscope.agent.probes import PROBES
from cniscope.agent.probes.probe import ProbeContext
from cniscope.api.v1 import common_pb2
from cniscope.core import netpolicy
from cniscope.core.errors import CniscopeError
from cniscope.core.probekinds import spec_for
from cniscope.core.probespec import validate_path
from cniscope.core.version import VERSION


@dataclass(frozen=True)
class Origin:
    """Where this agent stands: its node, peers, allow-list, ports, and where each path starts."""

    node: str
    peers: Mapping[str, common_pb2.Peer]
    allow_cidrs: str
    target_port: int
    iperf_port: int
    probe_address: Callable[[str], tuple[str, str]]  # path → (address, netns) of this node

    def checked(self, address: str) -> str:
        peer_addrs = [a for p in self.peers.values() for a in (p.host_ip, p.pod_ip) if a]
        return netpolicy.check_target(address, peer_addrs, self.allow_cidrs)

    def peer_address(self, node: str, path: str) -> str:
        peer = self.peers.get(node)
        if peer is None:
            raise CniscopeError(f"unknown target node {node!r}; known: {', '.join(sorted(self.peers)) or 'none'}")
        address = peer.pod_ip if path == "pod" else peer.host_ip
        if not address:
            raise CniscopeError(f"node {node} has no {path} address")
        return address


def prepare(req: common_pb2.ProbeRequest, origin: Origin) -> ProbeContext:
    """Validate kind, parameters, path and target; raises a CniscopeError saying what is wrong."""
    spec = spec_for(req.kind)
    values = spec.params.validate(dict(req.params))
    path = validate_path(req.path)
    if req.kind not in PROBES:
        raise CniscopeError(f"probe {req.kind!r} is not implemented by this agent ({VERSION})")
    if spec.needs_target:
        target = req.target_address
        if path == "service" and not target:
            raise CniscopeError("the service path needs the Service's ClusterIP as the target address")
        if not target and req.target_node:
            target = origin.peer_address(req.target_node, path)
        if not target:
            raise CniscopeError("a probe needs a target node or address")
        address = origin.checked(target)
    else:
        given = values.text(spec.target_param) if spec.target_param else ""
        address = origin.checked(given or req.target_address) if given or req.target_address else ""
        if given:
            values = values.replace(**{spec.target_param: address})
    netns = origin.probe_address(path)[1] if path != "host" else ""
    caps.require_probe(spec.privileges, netns)  # "missing CAP_X" before any packet leaves
    port = req.target_port or 0
    return ProbeContext(
        probe_id=req.probe_id, kind=req.kind, source_node=origin.node, target_node=req.target_node,
        target_address=address, path=path, params=values, netns=netns,
        target_port=port or origin.target_port, iperf_port=port or origin.iperf_port,
    )
