"""A minimal Kubernetes API client for the lab itself (standard library only: the lab never loads the
``kubernetes`` package). Mutual TLS with one of the lab's client certificates, JSON in and out."""

from __future__ import annotations

import ctypes
import functools
import http.client
import json
import os
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

CLONE_NEWNET = 0x40000000


def socket_in_netns(netns: Path, address: tuple[str, int], timeout: float | None = None,
                    source: tuple[str, int] | None = None) -> socket.socket:
    """A TCP connection made from inside network namespace ``netns`` (a /run/netns path).

    A socket belongs to the namespace it was created in, so a short-lived thread enters the
    namespace (setns affects that thread only), creates the socket and ends; connecting and all
    traffic then happen from the caller's thread. Lets host-side code reach the lab's API server,
    which listens only inside the lab."""
    made: dict[str, object] = {}

    def create() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({netns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            made["sock"] = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except BaseException as exc:  # handed to the caller's thread
            made["err"] = exc

    t = threading.Thread(target=create, name="netns-socket")
    t.start()
    t.join()
    if "err" in made:
        raise made["err"]  # type: ignore[misc]
    sock = made["sock"]
    assert isinstance(sock, socket.socket)
    try:
        sock.settimeout(timeout)
        if source:
            sock.bind(source)
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


class ApiError(Exception):
    def __init__(self, status: int, reason: str, body: str) -> None:
        super().__init__(f"{status} {reason}: {body[:300]}")
        self.status = status
        self.body = body


class Client:
    def __init__(self, server: str, *, ca: Path, cert: Path, key: Path, timeout: float = 10.0,
                 netns: Path | None = None) -> None:
        if not server.startswith("https://"):
            raise ValueError(f"server must be https://host:port, got {server!r}")
        hostport = server.removeprefix("https://").rstrip("/")
        host, _, port = hostport.rpartition(":")
        self.host, self.port = host, int(port)
        self.timeout = timeout
        self.ctx = ssl.create_default_context(cafile=str(ca))
        self.ctx.load_cert_chain(str(cert), str(key))
        self.netns = netns
        self._conn: http.client.HTTPSConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method: str, path: str, body: Any = None, *,
                content_type: str = "application/json", query: dict[str, str] | None = None) -> Any:
        """One call; a JSON answer is decoded, 2xx or ApiError. Reconnects once on a stale socket."""
        if query:
            path = f"{path}?{urlencode(query)}"
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json", "User-Agent": "cniscope-lab"}
        if data is not None:
            headers["Content-Type"] = content_type
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx,
                                                         timeout=self.timeout)
                if self.netns is not None:
                    self._conn._create_connection = (  # type: ignore[attr-defined]
                        functools.partial(socket_in_netns, self.netns))
            try:
                self._conn.request(method, path, body=data, headers=headers)
                resp = self._conn.getresponse()
                raw = resp.read().decode("utf-8", "replace")
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt:
                    raise
                continue
            if not 200 <= resp.status < 300:
                raise ApiError(resp.status, resp.reason, raw)
            if raw and resp.getheader("Content-Type", "").startswith("application/json"):
                return json.loads(raw)
            return raw
        raise AssertionError("unreachable")

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def create(self, path: str, obj: dict[str, Any]) -> Any:
        return self.request("POST", path, obj)

    def merge_patch(self, path: str, patch: dict[str, Any]) -> Any:
        return self.request("PATCH", path, patch, content_type="application/merge-patch+json")

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until GET /readyz answers ``ok``; raises TimeoutError with the last answer."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                if str(self.get("/readyz")).strip() == "ok":
                    return
            except ApiError as exc:
                last = str(exc)
            except OSError as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.3)
        raise TimeoutError(f"API server not ready after {timeout:.0f}s: {last}")


def name_path(*parts: str) -> str:
    return "/".join(quote(p, safe="") for p in parts)


def microtime(t: float | None = None) -> str:
    """Kubernetes MicroTime (RFC 3339 with microseconds, UTC)."""
    t = time.time() if t is None else t
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1e6):06d}Z"


def rfc3339(t: float | None = None) -> str:
    t = time.time() if t is None else t
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
