"""The collector's commands to this agent, each answered by a ``CommandAck`` on the stream.

``run_probe`` (checked before it is accepted, then run in the background), ``cancel_probe``,
``serve_target`` / ``stop_target`` (one-off bandwidth servers) and ``refresh_capabilities``. An
unknown command is refused, never ignored. Handling never blocks the stream's reader.
"""

from __future__ import annotations

from collections.abc import Callable

from cniscope.agent.capability_refresh import CapabilityRefresh
from cniscope.agent.probe_runner import ProbeRunner
from cniscope.agent.target_server import TargetServer
from cniscope.api.v1 import agent_pb2
from cniscope.core.errors import CniscopeError


class CommandHandler:
    def __init__(self, runner: ProbeRunner, targets: TargetServer, refresh: CapabilityRefresh,
                 post: Callable[[agent_pb2.AgentMessage], None]) -> None:
        self.runner = runner
        self.targets = targets
        self.refresh = refresh
        self.post = post

    def _ack(self, command_id: str, accepted: bool = True, error: str = "") -> None:
        self.post(agent_pb2.AgentMessage(command_ack=agent_pb2.CommandAck(
            command_id=command_id, accepted=accepted, error="" if accepted else error)))

    async def handle(self, cmd: agent_pb2.Command) -> None:
        which = cmd.WhichOneof("body")
        if which == "run_probe":
            try:
                ctx = self.runner.prepare(cmd.run_probe)
            except CniscopeError as exc:
                self._ack(cmd.command_id, False, f"{exc.title}: {exc}")
                self.runner.record(cmd.run_probe, None, error=f"{exc.title}: {exc}")
                return
            self._ack(cmd.command_id)
            self.runner.start(cmd.run_probe, ctx)
        elif which == "cancel_probe":
            self._ack(cmd.command_id, self.runner.cancel(cmd.cancel_probe.probe_id),
                      "no such probe running (already finished)")
        elif which == "serve_target":
            self.post(agent_pb2.AgentMessage(command_ack=await self.targets.serve(cmd.command_id, cmd.serve_target)))
        elif which == "stop_target":
            self._ack(cmd.command_id, await self.targets.stop(cmd.stop_target.probe_id),
                      "no server for that probe (already reaped)")
        elif which == "refresh_capabilities":
            self._ack(cmd.command_id)
            self.refresh.request()
        else:
            self._ack(cmd.command_id, False, f"unknown command {which!r}")
