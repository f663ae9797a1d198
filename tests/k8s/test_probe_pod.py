"""The probe pod's process runs as the DaemonSet runs it: a non-root uid with no capabilities at
all, and serves accept-and-close and the HTTP echo its liveness probe calls.

When the checkout sits in a directory uid 65532 cannot read (a private temp directory), the process
keeps uid 0 but still drops every capability, so it cannot read past file permissions either."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.caps import missing

PORT = 17421


def free() -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", PORT)) != 0


def _importable_as(uid: int) -> bool:
    r = subprocess.run(["setpriv", "--reuid", str(uid), "--regid", str(uid), "--clear-groups",
                        sys.executable, "-c", "import cniscope.cli"], capture_output=True, timeout=60)
    return r.returncode == 0


@pytest.fixture
def probe_pod() -> Iterator[subprocess.Popen[bytes]]:
    if shutil.which("setpriv") is None:
        missing("setpriv (util-linux) is not installed")
    assert free(), f"port {PORT} busy"
    argv = [sys.executable, "-m", "cniscope.cli", "probe-pod", "--address", "127.0.0.1", "--port", str(PORT)]
    if os.geteuid() == 0:   # drop to the DaemonSet's uid with an empty capability set, as the pod runs
        uid = "65532" if _importable_as(65532) else "0"
        argv = ["setpriv", "--reuid", uid, "--regid", uid, "--clear-groups",
                "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while free():
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "probe pod did not listen"
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_probe_pod_serves_unprivileged(probe_pod: subprocess.Popen[bytes]) -> None:
    status = open(f"/proc/{probe_pod.pid}/status").read()
    if os.geteuid() == 0:
        assert "Uid:\t65532" in status or not _importable_as(65532)
        assert "CapEff:\t0000000000000000" in status
        assert "CapBnd:\t0000000000000000" in status
    with socket.create_connection(("127.0.0.1", PORT), timeout=3) as s:
        assert s.recv(16) == b""                      # accepted, then closed by the server
    with socket.create_connection(("127.0.0.1", PORT + 1), timeout=3) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200 OK")
