"""GET from a plain-HTTP endpoint on this node — kube-proxy's ``/metrics`` and ``/proxyMode`` — over
one socket.

HTTP/1.0 with ``Connection: close``: the server answers with one unchunked body and closes, so the
reply is the bytes read until then, bounded by ``limit``. The agent asks nothing else over HTTP, so
it carries no HTTP client library (``urllib.request`` and the e-mail parser it loads cost every agent
over half a megabyte).
"""

from __future__ import annotations

import socket


class HttpError(OSError):
    """The endpoint answered, but not with 200 and a complete header."""


def get(address: str, path: str, *, timeout: float, limit: int = 4 << 20) -> str:
    """The body of ``GET http://ADDRESS/PATH`` (``address`` is ``host:port``, ``[v6]:port`` too),
    decoded as UTF-8; at most ``limit`` bytes of it. Any failure is an ``OSError``."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise HttpError(f"not a host:port address: {address!r}")
    request = f"GET {path} HTTP/1.0\r\nHost: {address}\r\nConnection: close\r\n\r\n".encode()
    data = bytearray()
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        while len(data) < limit + (64 << 10):   # the body's limit plus room for the header
            chunk = sock.recv(64 << 10)
            if not chunk:
                break
            data += chunk
    head, sep, body = bytes(data).partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split()
    if not sep or len(status) < 2 or not status[0].startswith(b"HTTP/"):
        raise HttpError(f"no HTTP response from {address}{path}")
    if status[1] != b"200":
        raise HttpError(f"HTTP {status[1].decode(errors='replace')} from {address}{path}")
    return body[:limit].decode("utf-8", "replace")
