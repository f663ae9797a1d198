"""The one-off iperf3 server of a target agent, on loopback: it serves exactly one test, exits by
itself when no client comes, and is reaped either way."""

from __future__ import annotations

import asyncio
import socket
import time

from cniscope.agent.probes.iperf3_parse import parse_tcp
from cniscope.agent.targets.iperf import IperfServers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_idle_server_exits_by_itself_and_is_reaped() -> None:
    async def go() -> tuple[float, bool]:
        servers = IperfServers()
        srv = await servers.start("p-idle", "127.0.0.1", free_port(), "", 1.0, idle_seconds=1)
        t0 = time.monotonic()
        await asyncio.wait_for(srv.proc.wait(), 6)
        await asyncio.sleep(0.1)
        return time.monotonic() - t0, "p-idle" in servers.servers

    waited, still_listed = asyncio.run(go())
    assert waited < 5
    assert not still_listed


def test_serves_one_test_then_exits() -> None:
    async def go() -> tuple[float, int | None, bool]:
        servers = IperfServers()
        port = free_port()
        srv = await servers.start("p-one", "127.0.0.1", port, "", 1.0)
        client = await asyncio.create_subprocess_exec(
            "iperf3", "-c", "127.0.0.1", "-p", str(port), "-J", "-t", "1",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        out, _ = await client.communicate()
        await asyncio.wait_for(srv.proc.wait(), 5)
        rep = parse_tcp(out.decode())
        refused = False
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
        except ConnectionRefusedError:
            refused = True
        await servers.close()
        return rep.received_bps, srv.proc.returncode, refused

    bps, rc, refused = asyncio.run(go())
    assert bps > 0
    assert rc == 0
    assert refused  # nothing listens between tests


def test_stop_kills_a_waiting_server() -> None:
    async def go() -> tuple[bool, int | None]:
        servers = IperfServers()
        srv = await servers.start("p-stop", "127.0.0.1", free_port(), "", 1.0)
        stopped = await servers.stop("p-stop")
        return stopped, srv.proc.returncode

    stopped, rc = asyncio.run(go())
    assert stopped
    assert rc is not None
