"""This node as a probe target: where it serves and originates probe traffic, per path.

Always on, on every probe address (host IP; the probe pod's IP inside its network namespace): the
TCP accept-and-close port and the HTTP echo endpoint. On command, for one bandwidth probe at a time:
a one-off iperf3 server that serves that probe and nothing after it.
"""

from __future__ import annotations

from cniscope.agent.targets import listeners
from cniscope.agent.targets.iperf import IperfServers
from cniscope.api.v1 import agent_pb2, targets_pb2
from cniscope.core.config import AgentConfig
from cniscope.core.errors import CniscopeError
from cniscope.core.probekinds import spec_for
from cniscope.core.probespec import validate_path

MAX_EXPECTED_SECONDS = 600.0   # a one-off server lives at most this long (plus the reaper's margin)


class TargetServer:
    def __init__(self, cfg: AgentConfig) -> None:
        """``cfg`` is read on every call: a replaced probe pod changes its pod IP and netns."""
        self.cfg = cfg
        self.iperf_servers = IperfServers()
        self.listeners: listeners.Listeners | None = None

    def probe_address(self, path: str) -> tuple[str, str]:
        """(address, netns) where this node serves and originates probe traffic for ``path``."""
        if path in ("pod", "service"):
            if not self.cfg.pod_ip or not self.cfg.pod_netns:
                raise CniscopeError(f"node {self.cfg.node} has no probe pod (pod IP / netns not configured)")
            return self.cfg.pod_ip, self.cfg.pod_netns
        if not self.cfg.host_ip:
            raise CniscopeError(f"node {self.cfg.node} has no host IP configured")
        return self.cfg.host_ip, ""

    @property
    def serving_bandwidth(self) -> bool:
        """A one-off bandwidth server is up (a test towards this node runs or is about to)."""
        return bool(self.iperf_servers.servers)

    async def serve(self, command_id: str, req: targets_pb2.ServeTarget) -> agent_pb2.CommandAck:
        """Start the one-off server a served probe kind needs; the ack says where it listens."""
        ack = agent_pb2.CommandAck(command_id=command_id, accepted=True)
        try:
            if not spec_for(req.kind).served:
                raise CniscopeError(f"no one-off server for probe kind {req.kind!r}")
            address, netns = self.probe_address(validate_path(req.path))
            port = req.port or self.cfg.iperf_port
            expected = min(max(req.expected_seconds, 1.0), MAX_EXPECTED_SECONDS)
            await self.iperf_servers.start(req.probe_id, address, port, netns, expected)
            ack.target.CopyFrom(targets_pb2.TargetReady(probe_id=req.probe_id, address=address, port=port))
        except CniscopeError as exc:
            ack.accepted = False
            ack.error = f"{exc.title}: {exc}"
        return ack

    async def stop(self, probe_id: str) -> bool:
        """Stop the one-off server of ``probe_id``; False when it has already gone."""
        return await self.iperf_servers.stop(probe_id)

    async def start_listeners(self) -> None:
        """(Re)start the accept-and-close port and the HTTP echo endpoint on every probe address."""
        if self.listeners is not None:
            await self.listeners.close()
        endpoints = []
        if self.cfg.host_ip:
            endpoints.append((self.cfg.host_ip, ""))
        if self.cfg.pod_ip and self.cfg.pod_netns:
            endpoints.append((self.cfg.pod_ip, self.cfg.pod_netns))
        self.listeners = await listeners.start(endpoints, self.cfg.target_port)

    async def close(self) -> None:
        if self.listeners is not None:
            await self.listeners.close()
            self.listeners = None
        await self.iperf_servers.close()
