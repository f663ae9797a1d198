"""A bcc tracer compiled against the kernel's own header archive instead of a headers package: the
archive is made the way the kernel's gen_kheaders.sh makes /sys/kernel/kheaders.tar.xz (the source and
build trees' include/ and arch/<arch>/include/ merged into one), the tracer sees no
/lib/modules/<release>/build, unpacks the archive, and counts an exact workload in a network
namespace. An archive whose kconfig.h (which bcc includes first) stops the compiler makes the load
fail with that message, so bcc did compile against the unpacked archive."""

from __future__ import annotations

import io
import lzma
import os
import platform
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cniscope.agent.netlink import in_netns
from cniscope.agent.tracers import kernel_headers
from cniscope.agent.tracers.tcpconnlat import TcpConnLat
from cniscope.core.errors import Unavailable
from tests import caps

pytestmark = [pytest.mark.bcc, pytest.mark.netns, pytest.mark.slow]

ARCH = {"x86_64": "x86", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def merged_headers(dest: Path) -> Path:
    release = os.uname().release
    mods = Path("/lib/modules") / release
    for tree in (mods / "source", mods / "build"):          # build (generated headers) last: it wins
        for sub in ("include", f"arch/{ARCH}/include"):
            if (tree / sub).is_dir():
                shutil.copytree(tree / sub, dest / sub, symlinks=False, dirs_exist_ok=True)
    return dest


def write_archive(tree: Path, archive: Path, poison: str = "") -> Path:
    """``tree`` as an xz tar; with ``poison``, a later include/linux/kconfig.h (bcc includes it first)
    that stops the compiler with that message."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with lzma.open(archive, "wb", preset=0) as xz, tarfile.open(fileobj=xz, mode="w") as tar:
        tar.add(tree, arcname=".")
        if poison:
            data = f"#error {poison}\n".encode()
            info = tarfile.TarInfo("./include/linux/kconfig.h")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


@pytest.fixture(scope="module")
def header_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    caps.require("bcc")
    tree = merged_headers(tmp_path_factory.mktemp("kheaders") / "tree")
    if not (tree / "include" / "linux" / "kconfig.h").exists():
        caps.missing("the installed kernel headers have no include/linux/kconfig.h")
    return tree


@pytest.fixture(scope="module")
def kheaders(header_tree: Path) -> Path:
    """A sysfs root whose kernel/kheaders.tar.xz holds the merged headers."""
    return write_archive(header_tree, header_tree.parent / "sys" / "kernel" / "kheaders.tar.xz").parents[1]


@pytest.fixture
def netns() -> Iterator[str]:
    caps.require("netns")
    name = f"cnskh{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    try:
        yield f"/run/netns/{name}"
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture(autouse=True)
def _own_bcc_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)
    monkeypatch.setattr(kernel_headers, "_pointed", [])
    monkeypatch.setenv("CNISCOPE_CACHE_DIR", str(tmp_path / "cache"))


def tracer(netns: str, sysfs: Path, tmp_path: Path) -> TcpConnLat:
    t = TcpConnLat(netns)
    t.modules_dir = tmp_path / "no-modules"                  # no headers package on this "node"
    t.sysfs = sysfs
    return t


def test_a_tracer_runs_on_the_kernels_own_headers(kheaders: Path, netns: str, tmp_path: Path) -> None:
    t = tracer(netns, kheaders, tmp_path)
    t.start()
    try:
        assert os.environ["BCC_KERNEL_SOURCE"] == str(tmp_path / "cache" / f"kheaders-{os.uname().release}")
        with in_netns(netns):
            srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(64)
        for _ in range(7):
            with in_netns(netns):
                c = socket.socket()
            c.connect(srv.getsockname())
            c.close()
        srv.close()
        deadline = time.monotonic() + 5
        while t.figures()["connects"] < 7 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert t.figures()["connects"] == 7
    finally:
        t.stop()


def test_bcc_compiles_against_the_unpacked_archive(header_tree: Path, netns: str, tmp_path: Path) -> None:
    sysfs = write_archive(header_tree, tmp_path / "sys" / "kernel" / "kheaders.tar.xz",
                          poison="cniscope-kheaders-marker").parents[1]
    t = tracer(netns, sysfs, tmp_path)
    with pytest.raises(Unavailable, match="did not load"):
        t.start()
    unpacked = tmp_path / "cache" / f"kheaders-{os.uname().release}" / "include" / "linux" / "kconfig.h"
    assert "cniscope-kheaders-marker" in unpacked.read_text()
