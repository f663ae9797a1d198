"""Thin, typed adapters over iproute2 and nsenter for the lab. Every call states its namespace."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from cniscope.core.errors import LabError, ToolMissing

NETNS_DIR = Path("/run/netns")


def run(argv: Sequence[str], *, input: str | None = None, check: bool = True, timeout: float = 30) -> str:
    try:
        proc = subprocess.run(
            list(argv), input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise ToolMissing(f"{argv[0]} not found; install iproute2/util-linux (make setup)") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"{' '.join(argv[:4])}… timed out after {timeout:.0f}s") from None
    if check and proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip().splitlines()
        detail = err[-1] if err else f"exit {proc.returncode}"
        raise LabError(f"{' '.join(argv[:6])}: {detail}")
    return proc.stdout


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def add(name: str) -> None:
    if not exists(name):
        run(["ip", "netns", "add", name])


def delete(name: str) -> None:
    if exists(name):
        run(["ip", "netns", "del", name], check=False)


def list_names() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def batch(name: str, commands: Sequence[str]) -> None:
    """Run many `ip` commands inside namespace ``name`` in one process."""
    if commands:
        run(["ip", "-n", name, "-batch", "-"], input="\n".join(commands) + "\n")


def sysctl(name: str, key: str, value: str) -> bool:
    """Set a sysctl inside a namespace; False when the key does not exist here."""
    path = "/proc/sys/" + key.replace(".", "/")
    out = run(nsenter_argv(name, ["sh", "-c", f"[ -e {path} ] && echo {value} > {path} && echo ok"]),
              check=False)
    return out.strip() == "ok"


def nsenter_argv(name: str, argv: Sequence[str]) -> list[str]:
    """argv that runs inside namespace ``name`` without remounting /sys (bpffs pins stay visible)."""
    return ["nsenter", f"--net={NETNS_DIR / name}", "--", *argv]


def exec_in(name: str, argv: Sequence[str], *, check: bool = True, timeout: float = 60) -> str:
    return run(nsenter_argv(name, argv), check=check, timeout=timeout)


def is_root() -> bool:
    return os.geteuid() == 0
