"""Kernel headers for bcc, where the node has none installed.

bcc compiles its BPF C against the running kernel's headers. In order:

1. ``/lib/modules/$(uname -r)/build`` (a distribution's headers package, or the agent's host mount);
2. ``/sys/kernel/kheaders.tar.xz``, which kernels built with ``CONFIG_IKHEADERS`` offer (built in, or
   after ``modprobe kheaders``): unpacked once into a cache directory (``CNISCOPE_CACHE_DIR``, default
   ``/var/cache/cniscope``; the DaemonSet mounts an emptyDir there) and handed to bcc as
   ``BCC_KERNEL_SOURCE``;
3. otherwise the reason says what to install on the node's distribution, read from its
   ``/etc/os-release`` (the host's, through ``/proc/1/root``).

Unpacking refuses absolute paths, ``..``, links and device files, and is atomic (a temporary
directory renamed into place), so two agents or a crash never leave half a tree behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from cniscope.core.errors import Unavailable

if TYPE_CHECKING:  # tarfile is loaded only when headers are unpacked (tracers configured)
    import tarfile

DEFAULT_CACHE = Path("/var/cache/cniscope")


@dataclass(frozen=True)
class Headers:
    path: Path           # the directory bcc compiles against
    how: str             # installed | kheaders


def cache_root() -> Path:
    return Path(os.environ.get("CNISCOPE_CACHE_DIR", "") or DEFAULT_CACHE)


def os_release_text(proc: Path | None = None) -> str:
    """The host's /etc/os-release (through PID 1's root when the host /proc is mounted), else ours."""
    proc = proc or Path(os.environ.get("CNISCOPE_HOST_PROC", "/proc"))
    for p in (proc / "1" / "root" / "etc" / "os-release", Path("/etc/os-release")):
        try:
            return p.read_text()
        except OSError:
            continue
    return ""


def _fields(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip().strip('"').strip("'")
    return out


def install_advice(os_release: str, release: str) -> str:
    """What to install on the node, for its distribution (ID / ID_LIKE of os-release)."""
    f = _fields(os_release)
    ids = {f.get("ID", "").lower(), *f.get("ID_LIKE", "").lower().split()}
    name = f.get("PRETTY_NAME") or f.get("NAME") or "this distribution"
    version = f.get("VERSION_ID", "")
    if "bottlerocket" in ids:
        return (f"{name} has no package manager: load the kernel's headers module with `modprobe kheaders` "
                "from the admin container (`apiclient exec admin sheltie`) so /sys/kernel/kheaders.tar.xz appears")
    if ids & {"cos", "flatcar", "talos"}:
        return (f"{name} ships no kernel headers package: run `modprobe kheaders` on the node if its kernel "
                "has CONFIG_IKHEADERS=m, else the tracers cannot run there")
    if "amzn" in ids:
        tool = "yum" if version == "2" else "dnf"
        return f"on {name}: `{tool} install -y kernel-devel-{release}`"
    if ids & {"debian", "ubuntu"}:
        return f"on {name}: `apt-get install -y linux-headers-{release}`"
    if ids & {"rhel", "fedora", "centos", "rocky", "almalinux", "ol"}:
        return f"on {name}: `dnf install -y kernel-devel-{release}`"
    if ids & {"sles", "opensuse", "suse"}:
        return f"on {name}: `zypper install -y kernel-default-devel`"
    return (f"on {name}: install the kernel headers package for {release} (so /lib/modules/{release}/build "
            "exists), or `modprobe kheaders`")


def _safe_member(m: tarfile.TarInfo) -> bool:
    p = PurePosixPath(m.name)
    if p.is_absolute() or ".." in p.parts:
        return False
    return m.isdir() or m.isfile()


def extract(archive: Path, dest: Path) -> Path:
    """Unpack ``archive`` to ``dest`` (created atomically); only plain files and directories."""
    import tarfile

    if (dest / ".complete").exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=dest.parent))
    try:
        with tarfile.open(archive, "r:xz") as tar:
            members = tar.getmembers()
            bad = [m.name for m in members if not _safe_member(m) and not (m.issym() or m.islnk())]
            if bad:
                raise Unavailable(f"{archive}: refusing to unpack {bad[0]!r}")
            for m in members:
                if not _safe_member(m):
                    continue                      # links are not needed for headers and are skipped
                target = work / m.name
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(m)
                assert src is not None
                with src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
        (work / ".complete").write_text(archive.name + "\n")
        try:
            work.rename(dest)
        except OSError:                           # another process won the race: use its tree
            if not (dest / ".complete").exists():
                raise
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise Unavailable(f"cannot unpack {archive} into {dest.parent}: {exc}") from None
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return dest


def problem(release: str | None = None, modules: Path = Path("/lib/modules"), sysfs: Path = Path("/sys"),
            os_release: str | None = None) -> str | None:
    """Why there are no headers to compile against (and what to install), or None."""
    release = release or os.uname().release
    build = modules / release / "build"
    if build.exists() or (sysfs / "kernel" / "kheaders.tar.xz").is_file():
        return None
    text = os_release_text() if os_release is None else os_release
    return (f"kernel headers missing at {build} and the kernel offers no /sys/kernel/kheaders.tar.xz; "
            + install_advice(text, release))


def ensure(release: str | None = None, modules: Path = Path("/lib/modules"), sysfs: Path = Path("/sys"),
           cache: Path | None = None) -> Headers:
    """The headers to compile against, unpacking the kernel's own archive when there are no others."""
    release = release or os.uname().release
    build = modules / release / "build"
    if build.exists():
        return Headers(build, "installed")
    archive = sysfs / "kernel" / "kheaders.tar.xz"
    if archive.is_file():
        return Headers(extract(archive, (cache or cache_root()) / f"kheaders-{release}"), "kheaders")
    raise Unavailable(problem(release, modules, sysfs) or f"kernel headers missing at {build}")


_pointed: list[str] = []   # the BCC_KERNEL_SOURCE this module set, so it can take it back


def use_for_bcc(headers: Headers) -> None:
    """Point bcc at unpacked kheaders (it reads BCC_KERNEL_SOURCE when it compiles), or back at the
    installed headers; a BCC_KERNEL_SOURCE the operator set is left alone."""
    if headers.how == "kheaders":
        if "BCC_KERNEL_SOURCE" not in os.environ or _pointed:
            os.environ["BCC_KERNEL_SOURCE"] = str(headers.path)
            _pointed[:] = [str(headers.path)]
    elif _pointed and os.environ.get("BCC_KERNEL_SOURCE") == _pointed[0]:
        del os.environ["BCC_KERNEL_SOURCE"]
        _pointed.clear()
