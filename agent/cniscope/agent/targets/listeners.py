"""The always-on light targets of an agent, on every probe address (host IP in the node namespace,
pod IP inside the probe pod's namespace):

* ``target_port``: TCP accept-and-close — the far end of the ``connect`` probe;
* ``target_port + 1``: a minimal HTTP/1.1 echo server — the far end of the ``http`` probe. It
  answers every GET with ``200 OK`` and a short body, keeps the connection unless the client
  asked for ``Connection: close`` (or spoke HTTP/1.0).

Pod-namespace sockets are created by a thread that entered the namespace (``nsthread``) and then
served from the event loop like any other socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from cniscope.agent import nsthread

log = logging.getLogger("cniscope.agent.targets")

MAX_HEAD = 16 * 1024
# asyncio re-listens with its own backlog (100 by default): at ~10k connections/s a 10 ms stall of
# the event loop would overflow it, drop a SYN and cost the prober a 1 s retransmit
BACKLOG = 4096
IDLE_TIMEOUT = 30.0
BODY = b"cniscope\n"


class _AcceptClose(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


async def _http_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
                return
            if len(head) > MAX_HEAD:
                return
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
                return
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
            length = int(headers.get("content-length", "0") or 0)
            if length:
                await reader.readexactly(min(length, MAX_HEAD))
            close = headers.get("connection", "").lower() == "close" or parts[2] == "HTTP/1.0"
            status = b"200 OK" if parts[0] in ("GET", "HEAD") else b"405 Method Not Allowed"
            body = BODY if parts[0] == "GET" and status == b"200 OK" else b""
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain\r\nContent-Length: "
                         + str(len(body)).encode() + (b"\r\nConnection: close" if close else b"")
                         + b"\r\n\r\n" + body)
            await writer.drain()
            if close:
                return
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        return
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


@dataclass
class Listeners:
    servers: list[asyncio.AbstractServer] = field(default_factory=list)
    bound: list[str] = field(default_factory=list)      # "address:port/role"
    failed: list[str] = field(default_factory=list)

    async def close(self) -> None:
        for s in self.servers:
            s.close()
        for s in self.servers:
            with contextlib.suppress(Exception):
                await s.wait_closed()
        self.servers.clear()


async def start(endpoints: list[tuple[str, str]], port: int) -> Listeners:
    """Listen on ``port`` (accept-and-close) and ``port + 1`` (HTTP echo) at each (address, netns).
    A bind that fails is reported in ``failed`` and the others still serve."""
    out = Listeners()
    loop = asyncio.get_running_loop()
    for address, netns in endpoints:
        for p, role in ((port, "accept"), (port + 1, "http")):
            try:
                sock = await asyncio.to_thread(nsthread.listening_socket, netns, address, p, backlog=BACKLOG)
            except Exception as exc:
                out.failed.append(f"{address}:{p}/{role}: {exc}")
                log.warning("cannot serve %s on %s:%d: %s", role, address, p, exc)
                continue
            if role == "accept":
                srv = await loop.create_server(_AcceptClose, sock=sock, backlog=BACKLOG)
            else:
                srv = await asyncio.start_server(_http_conn, sock=sock, limit=MAX_HEAD * 2, backlog=BACKLOG)
            out.servers.append(srv)
            out.bound.append(f"{address}:{p}/{role}")
    return out
