"""One-off iperf3 servers for bandwidth probes aimed at this node.

``iperf3 -s -1 -B ADDR -p PORT --idle-timeout N --rcv-timeout MS``: it serves exactly one test,
exits by itself when no client comes within the idle timeout or a client goes silent, and is also
killed (by its own PID) after the probe's expected length plus a margin — so nothing listens
between tests and a client that vanishes mid-test cannot wedge the target.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from dataclasses import dataclass, field

from cniscope.core.errors import CniscopeError, ToolMissing

log = logging.getLogger("cniscope.agent.targets")

IDLE_SECONDS = 10          # no client within this long → the server exits
RCV_TIMEOUT_MS = 5000      # a client silent this long mid-test → the server ends the test
READY_TIMEOUT = 5.0
LIFETIME_MARGIN = 20.0


@dataclass
class IperfServer:
    probe_id: str
    address: str
    port: int
    proc: asyncio.subprocess.Process
    started: float = field(default_factory=time.monotonic)
    reaper: asyncio.Task[None] | None = None
    output: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid


class IperfServers:
    """The servers this agent runs for probes, by probe id. At most one bandwidth test at a time
    touches a node, so a new server first stops any earlier one that is still around."""

    def __init__(self) -> None:
        self.servers: dict[str, IperfServer] = {}

    async def start(self, probe_id: str, address: str, port: int, netns: str,
                    expected_seconds: float, idle_seconds: int = IDLE_SECONDS) -> IperfServer:
        binary = shutil.which("iperf3")
        if binary is None:
            raise ToolMissing("iperf3 not found on the target node (install iperf3)")
        for old in list(self.servers):
            await self.stop(old)
        argv = [binary, "-s", "-1", "-B", address, "-p", str(port), "--forceflush",
                "--idle-timeout", str(idle_seconds), "--rcv-timeout", str(RCV_TIMEOUT_MS)]
        if netns:
            argv = ["nsenter", f"--net={netns}", "--", *argv]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        srv = IperfServer(probe_id, address, port, proc)
        try:
            await asyncio.wait_for(self._until_listening(srv), READY_TIMEOUT)
        except (TimeoutError, CniscopeError) as exc:
            await self._kill(srv)
            tail = " / ".join(srv.output[-3:])
            why = "did not start listening in time" if isinstance(exc, TimeoutError) else str(exc)
            raise CniscopeError(f"iperf3 server on {address}:{port} {why}" + (f": {tail}" if tail else "")) from None
        self.servers[probe_id] = srv
        lifetime = expected_seconds + idle_seconds + LIFETIME_MARGIN
        srv.reaper = asyncio.create_task(self._reap(srv, lifetime), name=f"iperf3-reaper:{probe_id}")
        log.info("iperf3 server for probe %s on %s:%d (pid %d)", probe_id, address, port, srv.pid)
        return srv

    async def _until_listening(self, srv: IperfServer) -> None:
        assert srv.proc.stdout is not None
        while True:
            raw = await srv.proc.stdout.readline()
            if not raw:
                await srv.proc.wait()
                raise CniscopeError(f"exited with code {srv.proc.returncode}")
            line = raw.decode(errors="replace").strip()
            if line:
                srv.output.append(line[:200])
            if "Server listening on" in line:
                return

    async def _reap(self, srv: IperfServer, lifetime: float) -> None:
        assert srv.proc.stdout is not None
        try:
            async with asyncio.timeout(lifetime):
                while raw := await srv.proc.stdout.readline():
                    line = raw.decode(errors="replace").strip()
                    if line:
                        srv.output.append(line[:200])
                        del srv.output[:-50]
                await srv.proc.wait()
        except TimeoutError:
            log.warning("iperf3 server for probe %s outlived %.0fs; killing pid %d",
                        srv.probe_id, lifetime, srv.pid)
            await self._kill(srv)
        finally:
            if self.servers.get(srv.probe_id) is srv:
                del self.servers[srv.probe_id]

    @staticmethod
    async def _kill(srv: IperfServer) -> None:
        if srv.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                srv.proc.kill()
            await srv.proc.wait()

    async def stop(self, probe_id: str) -> bool:
        srv = self.servers.pop(probe_id, None)
        if srv is None:
            return False
        await self._kill(srv)
        if srv.reaper is not None and srv.reaper is not asyncio.current_task():
            srv.reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await srv.reaper
        return True

    async def close(self) -> None:
        for pid in list(self.servers):
            await self.stop(pid)
