"""Kernel headers for bcc without a headers package: the kernel's own /sys/kernel/kheaders.tar.xz
unpacked safely and once, and — with neither — a reason that says what to install on the node's
distribution (os-release texts as the distributions ship them)."""

from __future__ import annotations

import io
import lzma
import os
import tarfile
from pathlib import Path

import pytest

from cniscope.agent.tracers import kernel_headers as kh
from cniscope.agent.tracers.bcc_tracer import environment_problem
from cniscope.core.errors import Unavailable

REL = "6.1.159-182.297.amzn2023.x86_64"
OS_RELEASE = {
    "ubuntu": 'NAME="Ubuntu"\nVERSION_ID="24.04"\nID=ubuntu\nID_LIKE=debian\nPRETTY_NAME="Ubuntu 24.04.1 LTS"\n',
    "al2023": 'NAME="Amazon Linux"\nVERSION="2023"\nID="amzn"\nID_LIKE="fedora"\nVERSION_ID="2023"\n'
              'PRETTY_NAME="Amazon Linux 2023.6.20241212"\n',
    "al2": 'NAME="Amazon Linux"\nVERSION="2"\nID="amzn"\nID_LIKE="centos rhel fedora"\nVERSION_ID="2"\n'
           'PRETTY_NAME="Amazon Linux 2"\n',
    "rhel": 'NAME="Red Hat Enterprise Linux"\nID="rhel"\nID_LIKE="fedora"\nVERSION_ID="9.4"\n'
            'PRETTY_NAME="Red Hat Enterprise Linux 9.4 (Plow)"\n',
    "bottlerocket": 'NAME=Bottlerocket\nID=bottlerocket\nVERSION="1.29.0 (aws-k8s-1.31)"\n'
                    'PRETTY_NAME="Bottlerocket OS 1.29.0 (aws-k8s-1.31)"\nVARIANT_ID=aws-k8s-1.31\n',
    "cos": 'NAME="Container-Optimized OS"\nID=cos\nPRETTY_NAME="Container-Optimized OS from Google"\nVERSION_ID=117\n',
}


@pytest.mark.parametrize(("distro", "want"), [
    ("ubuntu", f"apt-get install -y linux-headers-{REL}"),
    ("al2023", f"dnf install -y kernel-devel-{REL}"),
    ("al2", f"yum install -y kernel-devel-{REL}"),
    ("rhel", f"dnf install -y kernel-devel-{REL}"),
    ("bottlerocket", "modprobe kheaders"),
    ("cos", "modprobe kheaders"),
])
def test_the_advice_names_the_package_for_the_distribution(distro: str, want: str) -> None:
    advice = kh.install_advice(OS_RELEASE[distro], REL)
    assert want in advice
    pretty = next(ln.split("=", 1)[1].strip('"') for ln in OS_RELEASE[distro].splitlines() if ln.startswith("PRETTY_NAME"))
    assert pretty in advice


def test_an_unknown_distribution_still_gets_a_path() -> None:
    advice = kh.install_advice("", REL)
    assert f"/lib/modules/{REL}/build" in advice


def xz_tar(path: Path, files: dict[str, bytes], extra: list[tarfile.TarInfo] | None = None) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(lzma.compress(buf.getvalue()))
    return path


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    root = tmp_path / "sys"
    xz_tar(root / "kernel" / "kheaders.tar.xz", {"include/linux/kconfig.h": b"#define X 1\n",
                                                 "arch/x86/include/asm/types.h": b"/* */\n"})
    return root


def test_kheaders_are_unpacked_once_into_the_cache(tmp_path: Path, sysfs: Path) -> None:
    modules = tmp_path / "modules"                       # no headers package
    h = kh.ensure(REL, modules, sysfs, cache=tmp_path / "cache")
    assert (h.how, h.path) == ("kheaders", tmp_path / "cache" / f"kheaders-{REL}")
    assert (h.path / "include" / "linux" / "kconfig.h").read_bytes() == b"#define X 1\n"
    stamp = (h.path / "arch/x86/include/asm/types.h").stat().st_mtime_ns
    again = kh.ensure(REL, modules, sysfs, cache=tmp_path / "cache")
    assert again == h
    assert (h.path / "arch/x86/include/asm/types.h").stat().st_mtime_ns == stamp
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"kheaders-{REL}"]   # no temporary left


def test_installed_headers_come_first(tmp_path: Path, sysfs: Path) -> None:
    (tmp_path / "modules" / REL / "build").mkdir(parents=True)
    h = kh.ensure(REL, tmp_path / "modules", sysfs, cache=tmp_path / "cache")
    assert h.how == "installed"
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("name", ["../escape.h", "/etc/evil.h"])
def test_an_archive_escaping_its_directory_is_refused(tmp_path: Path, name: str) -> None:
    archive = xz_tar(tmp_path / "sys" / "kernel" / "kheaders.tar.xz", {"include/ok.h": b"", name: b"x"})
    with pytest.raises(Unavailable, match="refusing to unpack"):
        kh.extract(archive, tmp_path / "cache" / "k")
    assert not (tmp_path / "escape.h").exists()
    assert not (tmp_path / "cache" / "k").exists()


def test_links_and_devices_are_not_unpacked(tmp_path: Path) -> None:
    link = tarfile.TarInfo("include/passwd")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    dev = tarfile.TarInfo("include/null")
    dev.type = tarfile.CHRTYPE
    archive = xz_tar(tmp_path / "k.tar.xz", {"include/a.h": b"a"}, [link])
    out = kh.extract(archive, tmp_path / "cache" / "k")
    assert not (out / "include" / "passwd").exists()
    assert (out / "include" / "a.h").read_bytes() == b"a"
    bad = xz_tar(tmp_path / "d.tar.xz", {"include/a.h": b"a"}, [dev])
    with pytest.raises(Unavailable, match="include/null"):
        kh.extract(bad, tmp_path / "cache" / "d")


def test_the_tracer_reason_says_what_to_install(tmp_path: Path) -> None:
    why = kh.problem(REL, tmp_path / "modules", tmp_path / "sys", os_release=OS_RELEASE["al2023"])
    assert why is not None
    assert why.startswith(f"kernel headers missing at {tmp_path}/modules/{REL}/build")
    assert "no /sys/kernel/kheaders.tar.xz" in why
    assert f"dnf install -y kernel-devel-{REL}" in why


def test_a_kernel_offering_kheaders_is_no_problem(tmp_path: Path, sysfs: Path) -> None:
    tracefs = tmp_path / "tracing"
    (tracefs / "events" / "sock" / "inet_sock_set_state").mkdir(parents=True)
    assert environment_problem(["sock/inet_sock_set_state"], tracefs=tracefs, modules=tmp_path / "none",
                               sysfs=sysfs) is None


def test_bcc_is_pointed_at_the_kheaders_and_back(tmp_path: Path, sysfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)
    monkeypatch.setattr(kh, "_pointed", [])
    h = kh.ensure(REL, tmp_path / "modules", sysfs, cache=tmp_path / "cache")
    kh.use_for_bcc(h)
    assert os.environ["BCC_KERNEL_SOURCE"] == str(h.path)
    kh.use_for_bcc(kh.Headers(tmp_path / "build", "installed"))
    assert "BCC_KERNEL_SOURCE" not in os.environ
    monkeypatch.setenv("BCC_KERNEL_SOURCE", "/opt/my-headers")          # the operator's choice stays
    kh.use_for_bcc(h)
    assert os.environ["BCC_KERNEL_SOURCE"] == "/opt/my-headers"
