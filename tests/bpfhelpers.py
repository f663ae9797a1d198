"""Fixtures for BPF/XDP tests: a private bpffs mount and a private network namespace with one
interface of each kind that exists on this kernel. Both are always torn down."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30)


@contextmanager
def private_bpffs(where: Path) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    r = sh("mount", "-t", "bpf", "bpf", str(where))
    assert r.returncode == 0, r.stderr
    try:
        yield where
    finally:
        sh("umount", str(where))


KINDS = {
    "va": ("veth", ["type", "veth", "peer", "name", "vb"]),
    "br0": ("bridge", ["type", "bridge"]),
    "mv0": ("macvlan", ["link", "va", "type", "macvlan"]),
    "vx0": ("vxlan", ["type", "vxlan", "id", "42", "dstport", "4789"]),
    "ifb0": ("ifb", ["type", "ifb"]),
}


@contextmanager
def xdp_netns(tag: str) -> Iterator[tuple[str, dict[str, str]]]:
    """(netns path, {ifname: kind}) for the interface kinds this kernel lets us create."""
    name = f"cnsx{tag}{os.getpid() % 100000}"
    r = sh("ip", "netns", "add", name)
    assert r.returncode == 0, r.stderr
    made: dict[str, str] = {}
    try:
        for ifname, (kind, args) in KINDS.items():
            if sh("ip", "-n", name, "link", "add", ifname, *args).returncode == 0:
                made[ifname] = kind
        for ifname in ("va", "vb"):
            sh("ip", "-n", name, "link", "set", ifname, "up")
        yield f"/run/netns/{name}", made
    finally:
        sh("ip", "netns", "del", name)
