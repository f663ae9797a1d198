"""A small asyncio HTTP/1.1 GET load generator: fixed QPS (open loop) or as fast as answers come.

Fixed-QPS mode schedules request *i* at ``t0 + i/qps`` whatever happened before, and measures
latency from that scheduled time — a request that waited for a free connection counts its wait, so
a slow server cannot hide behind fewer requests (no coordinated omission). Only the client's own
timer lateness is excluded, and reported apart (``send_lag_ms``). Max-QPS mode keeps
``concurrency`` requests in flight back to back.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from cniscope.agent import nsthread

MAX_HEAD = 16 * 1024


class HttpError(Exception):
    def __init__(self, kind: str, message: str = "") -> None:
        super().__init__(message or kind)
        self.kind = kind


@dataclass
class LoadResult:
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    scheduled: int = 0
    elapsed_s: float = 0.0
    connections: int = 0
    send_lag_ms: list[float] = field(default_factory=list)  # how late the client's timer fired


def parse_response_head(head: bytes) -> tuple[int, dict[str, str]]:
    """Status code and lower-cased headers of a response head (ending in CRLFCRLF)."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes everything
        raise HttpError("protocol", str(exc)) from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not _ascii_int(parts[1], 3):
        raise HttpError("protocol", f"bad status line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for ln in lines[1:]:
        if ln:
            k, sep, v = ln.partition(":")
            if not sep:
                raise HttpError("protocol", f"bad header line {ln[:80]!r}")
            headers[k.strip().lower()] = v.strip()
    return int(parts[1]), headers


def _ascii_int(s: str, max_len: int) -> bool:
    return 0 < len(s) <= max_len and s.isascii() and s.isdigit()


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.usable = True

    async def get(self, request: bytes) -> int:
        """One request/response; the caller bounds it with ``asyncio.timeout``."""
        self.writer.write(request)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        status, headers = parse_response_head(head)
        length = headers.get("content-length")
        if length is None or not _ascii_int(length, 12):
            raise HttpError("protocol", "response without a Content-Length")
        if int(length):
            await self.reader.readexactly(int(length))
        if headers.get("connection", "").lower() == "close":
            self.usable = False
        return status

    async def close(self) -> None:
        self.usable = False
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


def classify(exc: BaseException) -> str:
    if isinstance(exc, HttpError):
        return exc.kind
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | asyncio.IncompleteReadError):
        return "reset"
    if isinstance(exc, asyncio.LimitOverrunError):
        return "protocol"
    if isinstance(exc, OSError):
        return "unreachable" if exc.errno in (113, 101) else "oserror"
    return type(exc).__name__.lower()


class HttpLoad:
    def __init__(self, address: str, port: int, netns: str, *, keepalive: bool, concurrency: int,
                 timeout: float, path: str = "/") -> None:
        self.address, self.port, self.netns = address, port, netns
        self.keepalive, self.concurrency, self.timeout = keepalive, concurrency, timeout
        conn_hdr = b"" if keepalive else b"Connection: close\r\n"
        self.request = (f"GET {path} HTTP/1.1\r\nHost: {address}:{port}\r\nUser-Agent: cniscope\r\n".encode()
                        + conn_hdr + b"\r\n")
        self.idle: list[Connection] = []
        self.result = LoadResult()
        self._pool: ThreadPoolExecutor | None = None
        self.last_done = 0.0

    async def __aenter__(self) -> HttpLoad:
        if self.netns:  # one thread that lives in the namespace makes every socket
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="netns-sockets",
                                            initializer=nsthread.enter, initargs=(self.netns,))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for c in self.idle:
            await c.close()
        self.idle.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        if self._pool is not None:
            sock = await loop.run_in_executor(self._pool, socket.socket, socket.AF_INET, socket.SOCK_STREAM)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(self.timeout):
                await loop.sock_connect(sock, (self.address, self.port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_HEAD)
        except BaseException:
            sock.close()
            raise
        self.result.connections += 1
        return Connection(reader, writer)

    async def one(self, t_ref: float) -> bool:
        """One request; latency from ``t_ref`` (the scheduled or actual start, perf_counter)."""
        conn: Connection | None = None
        try:
            conn = self.idle.pop() if (self.keepalive and self.idle) else await self._connect()
            async with asyncio.timeout(self.timeout):
                status = await conn.get(self.request)
            if not 200 <= status < 300:
                raise HttpError(f"status_{status}")
            self.last_done = time.perf_counter()
            self.result.latencies_ms.append((self.last_done - t_ref) * 1000.0)
            return True
        except Exception as exc:
            self.result.errors[classify(exc)] += 1
            if conn is not None:
                conn.usable = False
            return False
        finally:
            if conn is not None:
                if self.keepalive and conn.usable:
                    self.idle.append(conn)
                else:
                    await conn.close()

    async def fixed_rate(self, qps: int, duration: float, tick: Callable[[float], Awaitable[None]] | None = None) -> LoadResult:
        total = max(1, int(round(qps * duration)))
        sem = asyncio.Semaphore(self.concurrency)
        tasks: set[asyncio.Task[None]] = set()

        async def gated(t_sched: float) -> None:
            # latency counts from when the request was due, or — when the client's own timer woke
            # late — from when it could first go; waiting for a free connection always counts
            t_ready = time.perf_counter()
            self.result.send_lag_ms.append((t_ready - t_sched) * 1000.0)
            async with sem:
                await self.one(max(t_sched, t_ready))

        t0 = time.perf_counter()
        for i in range(total):
            t_sched = t0 + i / qps
            delay = t_sched - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(tasks) > self.concurrency + qps:  # over a second of backlog: the client is the limit
                self.result.errors["client_backlog"] += 1
                continue
            task = asyncio.create_task(gated(t_sched))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if tick is not None and i % max(1, qps) == 0:
                await tick(i / total)
        if tasks:
            await asyncio.wait(set(tasks), timeout=self.timeout + 1.0)
        for t in list(tasks):
            t.cancel()
        self.result.scheduled = total
        # the offered window, stretched when answers came back after it
        self.result.elapsed_s = max(duration, self.last_done - t0)
        return self.result

    async def max_rate(self, duration: float) -> LoadResult:
        deadline = time.perf_counter() + duration

        async def worker() -> None:
            while time.perf_counter() < deadline:
                self.result.scheduled += 1
                if not await self.one(time.perf_counter()):
                    await asyncio.sleep(0.001)  # a failing target is not spun against

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        self.result.elapsed_s = time.perf_counter() - t0
        return self.result
