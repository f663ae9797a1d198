"""Processes the lab starts: recorded by PID and start time, ended only by their own PID."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass
class ProcRecord:
    role: str             # "collector", "agent:node1", "dnsmasq"
    pid: int
    start_ticks: int      # /proc/PID/stat field 22: guards against PID reuse
    argv: list[str]
    log: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ProcRecord:
        return cls(role=str(d["role"]), pid=int(d["pid"]), start_ticks=int(d["start_ticks"]),
                   argv=[str(a) for a in d["argv"]], log=str(d["log"]))


def start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may contain spaces/parens: split after the last ')'
    fields = stat[stat.rfind(")") + 2:].split()
    return int(fields[19])


def alive(rec: ProcRecord) -> bool:
    st = start_ticks(rec.pid)
    if st is None or st != rec.start_ticks:
        return False
    try:
        state = Path(f"/proc/{rec.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def spawn(role: str, argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> ProcRecord:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            list(argv), stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, **(env or {})},
        )
    st = None
    for _ in range(100):
        st = start_ticks(proc.pid)
        if st is not None:
            break
        time.sleep(0.01)
    return ProcRecord(role=role, pid=proc.pid, start_ticks=st or 0, argv=list(argv), log=str(log))


def stop(rec: ProcRecord, timeout: float = 5.0) -> bool:
    """SIGTERM, wait, then SIGKILL — by this record's PID only. True when it is gone."""
    if not alive(rec):
        _reap(rec.pid)
        return True
    try:
        os.kill(rec.pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(rec.pid)
        if not alive(rec):
            return True
        time.sleep(0.05)
    try:
        os.kill(rec.pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    for _ in range(100):
        _reap(rec.pid)
        if not alive(rec):
            return True
        time.sleep(0.02)
    return not alive(rec)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
