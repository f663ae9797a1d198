"""The HTTP load generator against the agent's own echo endpoint and accept-and-close port, on
loopback: fixed rate accuracy, keepalive vs close, refused ports, and a server that speaks garbage."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from cniscope.agent.probes.connect import connect_loop
from cniscope.agent.probes.http import figures_of
from cniscope.agent.probes.httpload import HttpLoad, LoadResult
from cniscope.agent.targets import listeners


def free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as a, socket.socket() as b:
            try:
                a.bind(("127.0.0.1", 0))
                port = int(a.getsockname()[1])
                b.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port pair")


async def with_targets(qps: int, duration: float, keepalive: bool) -> tuple[LoadResult, list[str], int]:
    """The load against the echo endpoint, what was bound, and how many TCP connections the
    endpoint accepted (counted at the server's side of the socket, by the kernel)."""
    port = free_port_pair()
    ls = await listeners.start([("127.0.0.1", "")], port)
    try:
        async with HttpLoad("127.0.0.1", port + 1, "", keepalive=keepalive, concurrency=4, timeout=1.0) as load:
            before = connections_to(port + 1)
            res = await load.fixed_rate(qps, duration)
            return res, ls.bound, len(connections_to(port + 1) - before)
    finally:
        await ls.close()


def connections_to(port: int) -> set[int]:
    """The loopback TCP connections to ``port`` that the kernel still knows, by client port. The
    side that closed first keeps its socket in TIME_WAIT for a minute, so a connection closed by
    either end is still in /proc/net/tcp: as (client → port) or as (port → client)."""
    clients: set[int] = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = (int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16), fields[3])
        if state == "0A":  # LISTEN
            continue
        if local == port:
            clients.add(remote)
        elif remote == port:
            clients.add(local)
    return clients


@pytest.mark.parametrize("keepalive", [True, False])
def test_fixed_rate_against_the_echo_endpoint(keepalive: bool) -> None:
    res, bound, server_side = asyncio.run(with_targets(100, 1.0, keepalive))
    assert len(bound) == 2
    f = figures_of(res)
    assert f["requests"] == 100
    assert f["ok"] == 100
    assert 50 <= f["actual_qps"] <= 101  # never above the offered rate; a busy host may lag behind it
    assert f["errors"] == 0
    assert f["connections"] == server_side  # what the client counts is what the server accepted
    if keepalive:
        assert 1 <= server_side <= 4        # at most one connection per concurrent request, reused
    else:
        assert server_side == 100           # Connection: close costs one connection per request


def test_refused_port_counts_errors_and_no_latency() -> None:
    port = free_port_pair()

    async def go() -> LoadResult:
        async with HttpLoad("127.0.0.1", port, "", keepalive=True, concurrency=2, timeout=0.5) as load:
            return await load.max_rate(0.3)

    f = figures_of(asyncio.run(go()))
    assert f["ok"] == 0
    assert f["errors_refused"] > 0
    assert f["errors_refused"] < 2000  # a failing target is not spun against
    assert "p50_ms" not in f


def test_garbage_speaking_server_is_a_protocol_error() -> None:
    async def go() -> LoadResult:
        async def garbage(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await r.readuntil(b"\r\n\r\n")
            w.write(b"SSH-2.0-nope\r\n\r\n")
            await w.drain()
            w.close()

        srv = await asyncio.start_server(garbage, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        try:
            async with HttpLoad("127.0.0.1", port, "", keepalive=True, concurrency=1, timeout=0.5) as load:
                return await load.fixed_rate(20, 0.5)
        finally:
            srv.close()

    f = figures_of(asyncio.run(go()))
    assert f["errors_protocol"] == 10
    assert f["ok"] == 0


def test_accept_and_close_port_serves_connect() -> None:
    async def go() -> tuple[int, int]:
        port = free_port_pair()
        ls = await listeners.start([("127.0.0.1", "")], port)
        try:
            times, errors, _ = await asyncio.to_thread(connect_loop, "127.0.0.1", port, 200, 1.0)
            return len(times), sum(errors.values())
        finally:
            await ls.close()

    ok, errors = asyncio.run(go())
    assert ok == 200
    assert errors == 0


def test_connect_stops_at_its_budget() -> None:
    # every attempt is refused; the loop still ends at its budget, not after a million attempts
    port = free_port_pair()
    times, errors, wall = connect_loop("127.0.0.1", port, 1_000_000, 0.2, budget=0.3)
    assert not times
    assert sum(errors.values()) < 1_000_000
    assert wall < 2.0
