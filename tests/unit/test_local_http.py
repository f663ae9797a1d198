"""GET from a local plain-HTTP endpoint over one socket, against real servers on loopback: the body
of a 200, bounded by bytes; anything else (another status, no HTTP at all, nobody listening, not an
address) an OSError saying what."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

from cniscope.agent.local_http import HttpError, get

BIG = b"x" * (300 << 10)


class _Handler(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - stdlib hook name
        self.seen.append(f"{self.command} {self.path} {self.request_version}")
        body = {"/metrics": b"kubeproxy_sync_proxy_rules_duration_seconds_count 7\n", "/big": BIG}.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.end_headers()
        self.wfile.write(body or b"no such page")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def test_the_body_of_a_200_bounded_by_bytes(server: str) -> None:
    assert get(server, "/metrics", timeout=5) == "kubeproxy_sync_proxy_rules_duration_seconds_count 7\n"
    assert _Handler.seen[-1] == "GET /metrics HTTP/1.0"
    assert get(server, "/big", timeout=5) == BIG.decode()          # more than one read
    assert get(server, "/big", timeout=5, limit=1000) == "x" * 1000


def test_another_status_is_an_error(server: str) -> None:
    with pytest.raises(HttpError, match="HTTP 404"):
        get(server, "/proxyMode", timeout=5)


def test_no_http_no_listener_no_address() -> None:
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen()

        def babble() -> None:
            conn, _ = lsock.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")

        t = threading.Thread(target=babble)
        t.start()
        with pytest.raises(HttpError, match="no HTTP response"):
            get(f"127.0.0.1:{lsock.getsockname()[1]}", "/metrics", timeout=5)
        t.join()
        port = lsock.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        get(f"127.0.0.1:{port}", "/metrics", timeout=5)
    with pytest.raises(HttpError, match="not a host:port"):
        get("off", "/metrics", timeout=5)
