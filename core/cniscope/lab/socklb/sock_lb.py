"""The lab's socket-LB datapath: installed once per lab, found again through its pins, removed by
``lab down``.

* **bpffs**: a bpf filesystem of the lab's own, mounted at ``/run/cniscope/bpffs/<lab>`` (by the
  lab's name, like its namespaces, so every process finds it whatever state directory it was given;
  nothing is pinned in the machine's ``/sys/fs/bpf``); maps under ``tc/globals/`` as Cilium pins
  them, programs and their cgroup links under ``cniscope/`` (:mod:`.sock_lb_load`).
* **scope**, twice over: the programs are attached to the lab's cgroup (:mod:`cniscope.lab.lab_cgroup`),
  so only processes the lab started run them, and they translate a socket only when its network
  namespace's cookie is in ``cniscope_labns`` — the lab's node and pod namespaces. A process of the
  host namespace is never translated, in the lab's cgroup or not.
* **teardown**: every link is detached and unpinned, then the programs and maps are unpinned (the
  kernel frees them with their last reference) and the bpffs is unmounted.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cniscope.agent import nsthread
from cniscope.agent.bpf import map_elems
from cniscope.agent.bpf import syscall as sc
from cniscope.core.errors import LabError, Unavailable
from cniscope.lab import lab_cgroup, netns
from cniscope.lab.socklb import cilium_lb as lb
from cniscope.lab.socklb.sock_lb_load import all_pins, link_pin, map_pin

SO_NETNS_COOKIE = 71
BPFFS_ROOT = Path("/run/cniscope/bpffs")
LOAD_TIMEOUT = 120.0


def netns_cookie(path: str) -> int:
    """The kernel's cookie of the network namespace at ``path`` (what ``bpf_get_netns_cookie`` returns)."""
    def read() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            return int(struct.unpack("<Q", s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8))[0])

    return nsthread.call_in(path, read)


def bpffs_mounted(path: Path, mounts: Path = Path("/proc/mounts")) -> bool:
    try:
        return any(f[1] == str(path) and f[2] == "bpf" for f in (line.split() for line in mounts.read_text().splitlines())
                   if len(f) >= 3)
    except OSError:
        return False


def descendants(pid: int) -> list[int]:
    """``pid``'s children, their children, ... (from /proc/PID/task/*/children)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            with contextlib.suppress(OSError, ValueError):
                kids = [int(x) for x in task.read_text().split()]
                out += kids
                todo += kids
    return out


@dataclass
class SockLB:
    lab: str
    scope_netns: list[str] = field(default_factory=list)   # namespace files whose sockets are translated
    lab_pids: list[int] = field(default_factory=list)      # processes the lab started, to adopt

    @property
    def bpffs(self) -> Path:
        return BPFFS_ROOT / self.lab

    def installed(self) -> bool:
        return bpffs_mounted(self.bpffs) and all(link_pin(self.bpffs, p).exists() for p, _ in lb.PROGRAMS)

    def install(self) -> bool:
        """Mount the lab's bpffs, load and attach the programs (unless already there), fill the scope
        map and move the lab's running processes into its cgroup. True when it loaded the programs."""
        if not netns.is_root():
            raise LabError("the socket-LB datapath needs root (bpf(), cgroups, mounts)")
        cg = lab_cgroup.lab_cgroup(self.lab)
        if cg is None:
            raise Unavailable("no cgroup v2 hierarchy in /proc/mounts: socket LB attaches to a cgroup v2")
        (cg / lab_cgroup.PROCESSES).mkdir(parents=True, exist_ok=True)
        loaded = False
        if not self.installed():
            self._mount()
            self._uninstall_pins()  # half a datapath from a crash: start clean
            self._load(cg)
            loaded = True
        self.set_scope(self.scope_netns)
        for pid in self.lab_pids:
            for p in (pid, *descendants(pid)):
                lab_cgroup.join(self.lab, p)
        return loaded

    def _mount(self) -> None:
        if not bpffs_mounted(self.bpffs):
            self.bpffs.mkdir(parents=True, exist_ok=True)
            netns.run(["mount", "-t", "bpf", "bpf", str(self.bpffs)])

    def _load(self, cg: Path) -> None:
        argv = [sys.executable, "-m", "cniscope.lab.socklb.sock_lb_load", str(self.bpffs), str(cg)]
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=LOAD_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise LabError(f"loading the socket-LB programs took over {LOAD_TIMEOUT:.0f}s") from None
        if r.returncode != 0:
            lines = r.stderr.strip().splitlines()
            raise LabError("socket-LB programs did not load: " + (lines[-1] if lines else f"exit {r.returncode}"))

    def open_map(self, name: str) -> sc.Fd:
        """A read-write descriptor of one of the datapath's maps."""
        return sc.obj_get(str(map_pin(self.bpffs, name)), flags=0)

    def set_scope(self, netns_paths: Iterable[str]) -> list[int]:
        """Translate sockets of exactly these namespaces; returns their cookies."""
        cookies = [netns_cookie(p) for p in netns_paths]
        with self.open_map(lb.SCOPE_MAP) as fd:
            want = {struct.pack("<Q", c) for c in cookies}
            for k in map_elems.map_keys(fd.fd, 8, lb.MAX_ENTRIES):
                if k not in want:
                    map_elems.map_delete(fd.fd, k)
            for k in want:
                sc.map_update(fd.fd, k, b"\1")
        return cookies

    def uninstall(self) -> list[str]:
        """Detach every link, unpin everything, unmount the bpffs; what was removed."""
        done = self._uninstall_pins() if bpffs_mounted(self.bpffs) else []
        if bpffs_mounted(self.bpffs):
            netns.run(["umount", str(self.bpffs)])
            done.append(f"bpffs {self.bpffs}")
        for d in (self.bpffs, BPFFS_ROOT):
            with contextlib.suppress(OSError):
                d.rmdir()
        return done

    def _uninstall_pins(self) -> list[str]:
        done: list[str] = []
        for p in all_pins(self.bpffs):
            if not p.exists():
                continue
            if p.name.endswith("_link"):
                with contextlib.suppress(OSError), sc.obj_get(str(p), flags=0) as fd:
                    sc.link_detach(fd.fd)
            p.unlink()
            done.append(f"bpf pin {p.relative_to(self.bpffs)}")
        for d in (self.bpffs / "tc" / "globals", self.bpffs / "tc", self.bpffs / "cniscope"):
            with contextlib.suppress(OSError):
                d.rmdir()
        return done


def teardown(lab: str) -> list[str]:
    """``lab down``'s part: the datapath's links, pins and bpffs (nothing when none was installed)."""
    return SockLB(lab).uninstall()
