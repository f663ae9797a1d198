"""Bad input gets a clear error: unreachable collectors, unwritable databases, busy ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.waiting import wait_for

CNISCOPE = [sys.executable, "-m", "cniscope.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_agent_keeps_retrying_an_unreachable_collector(tmp_path: Path) -> None:
    port = _free_port()  # nothing listens there
    env = {**os.environ, "CNISCOPE_BACKOFF_INITIAL": "0.2", "CNISCOPE_BACKOFF_MAX": "0.5",
           "CNISCOPE_SAMPLE_INTERVAL": "0.2"}
    log = tmp_path / "agent.err"
    with log.open("w") as stderr:
        proc = subprocess.Popen([*CNISCOPE, "agent", "--collector", f"127.0.0.1:{port}", "--node", "lonely"],
                                stderr=stderr, text=True, env=env)
    try:
        def retried_three_times() -> bool:
            assert proc.poll() is None, f"the agent exited instead of retrying\n{log.read_text()[-2000:]}"
            return log.read_text().count("unreachable") >= 3

        wait_for(retried_three_times, 30, "three 'unreachable' retries in the agent's log")
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    err = log.read_text()
    assert proc.returncode == 0, err[-2000:]
    lines = [ln for ln in err.splitlines() if "unreachable" in ln]
    assert len(lines) >= 3, err[-2000:]
    assert f"127.0.0.1:{port}" in lines[0]
    assert "retrying in" in lines[0]


@pytest.mark.parametrize("where", ["missing-dir", "is-a-directory"])
def test_collector_with_unwritable_db_exits_with_one_line(tmp_path: Path, where: str) -> None:
    db = tmp_path / "nope" / "c.db" if where == "missing-dir" else tmp_path
    r = subprocess.run([*CNISCOPE, "collector", "--listen", f"127.0.0.1:{_free_port()}", "--db", str(db)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(err) == 1, r.stderr
    assert err[0].startswith("cniscope: store error: cannot open database"), err[0]


def test_collector_on_a_busy_port_says_so(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([*CNISCOPE, "collector", "--listen", f"127.0.0.1:{port}", "--db",
                            str(tmp_path / "c.db")], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr


def test_probe_with_parameter_above_cap_is_refused_locally() -> None:
    r = subprocess.run([*CNISCOPE, "probe", "tcp", "--from", "a", "--to", "b", "--duration", "9999",
                        "--collector", "127.0.0.1:1"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "duration" in r.stderr
    assert "cap" in r.stderr


def test_client_without_collector_says_where_it_looked() -> None:
    port = _free_port()
    r = subprocess.run([*CNISCOPE, "nodes", "--collector", f"127.0.0.1:{port}"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert f"127.0.0.1:{port}" in r.stderr
    assert "Traceback" not in r.stderr
