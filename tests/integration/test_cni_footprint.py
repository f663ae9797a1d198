"""CNI footprint sampler against real processes named like CNI agents (prctl PR_SET_NAME)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cniscope.agent.inspectors.cni_processes import inspect_footprint
from cniscope.agent.samplers.cni_footprint import CniFootprintSampler
from cniscope.api.v1 import common_pb2
from cniscope.core.errors import Unavailable
from cniscope.core.hostpaths import HostPaths

FAKE = r"""
import ctypes, sys, time
ctypes.CDLL(None).prctl(15, sys.argv[1].encode()[:15], 0, 0, 0)  # PR_SET_NAME -> /proc/PID/comm
ballast = bytearray(int(sys.argv[2]) << 20)
for i in range(0, len(ballast), 4096):
    ballast[i] = 1  # touch every page so it is resident
print("ready", flush=True)
end = time.monotonic() + 60
spin = sys.argv[3] == "spin"
while time.monotonic() < end:
    if not spin:
        time.sleep(0.05)
"""

NAMES = ("cnstest-agent", "cnstest-proxy")


class Fakes:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, name: str, mib: int = 40, spin: bool = False,
              cgroups: tuple[Path, ...] = ()) -> subprocess.Popen[str]:
        def join() -> None:  # in the child before exec, so its memory is charged to the cgroup
            for d in cgroups:
                (d / "cgroup.procs").write_text(str(os.getpid()))

        p = subprocess.Popen([sys.executable, "-c", FAKE, name, str(mib), "spin" if spin else "idle"],
                             stdout=subprocess.PIPE, text=True, preexec_fn=join if cgroups else None)
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen[str]) -> None:
        p.kill()
        p.wait(timeout=5)


@pytest.fixture
def fakes() -> Iterator[Fakes]:
    f = Fakes()
    yield f
    for p in f.procs:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=5)


def by(samples: list[common_pb2.Sample], name: str, process: str) -> float | None:
    for s in samples:
        if s.name == name and s.labels.get("process") == process:
            return s.value
    return None


def vm_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_found_rss_matches_proc_and_cpu_is_measured(fakes: Fakes) -> None:
    p = fakes.start("cnstest-agent", mib=40, spin=True)
    s = CniFootprintSampler(HostPaths(), names=NAMES, rescan_seconds=3600)
    s.sample(time.time_ns())
    time.sleep(0.5)
    out = s.sample(time.time_ns())
    rss = by(out, "cni_rss_bytes", "cnstest-agent")
    assert rss is not None
    assert abs(rss - vm_rss(p.pid)) <= 0.05 * vm_rss(p.pid)
    assert rss > 40 << 20
    pss = by(out, "cni_pss_bytes", "cnstest-agent")
    assert pss is not None
    assert pss > 30 << 20
    cpu = by(out, "cni_cpu_millicores", "cnstest-agent")
    assert cpu is not None
    assert 50 < cpu <= 1100  # a spinning process on a shared 2-core machine
    assert by(out, "cni_processes", "cnstest-agent") == 1
    assert by(out, "cni_rss_bytes", "cnstest-proxy") is None


def test_discovers_once_and_follows_a_restart(fakes: Fakes) -> None:
    p1 = fakes.start("cnstest-agent")
    fakes.start("cnstest-proxy")
    s = CniFootprintSampler(HostPaths(), names=NAMES, rescan_seconds=3600)
    for _ in range(5):
        s.sample(time.time_ns())
    assert s.scans == 1, "the sampler must not rescan /proc on every tick"
    assert {t.pid for t in s.tracked.values() if t.name == "cnstest-agent"} == {p1.pid}
    fakes.stop(p1)
    p2 = fakes.start("cnstest-agent")
    s.sample(time.time_ns())          # notices the exit
    out = s.sample(time.time_ns())    # rescans once and follows the new PID
    assert {t.pid for t in s.tracked.values() if t.name == "cnstest-agent"} == {p2.pid}
    assert s.scans == 2
    assert by(out, "cni_rss_bytes", "cnstest-agent") is not None


def test_process_exiting_mid_sample_costs_only_its_own_series(fakes: Fakes) -> None:
    fakes.start("cnstest-agent")
    p = fakes.start("cnstest-proxy")
    s = CniFootprintSampler(HostPaths(), names=NAMES, rescan_seconds=3600)
    s.discover()
    fakes.stop(p)  # gone between discovery and the read
    out = s.sample(time.time_ns())
    assert by(out, "cni_rss_bytes", "cnstest-agent") is not None
    assert by(out, "cni_rss_bytes", "cnstest-proxy") is None
    assert "vanished" in s.errors["cnstest-proxy"]
    assert "cnstest-agent" not in s.errors


def test_inspector_unavailable_without_cni_processes(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "comm").write_text("init\n")
    with pytest.raises(Unavailable, match="no CNI agent process"):
        inspect_footprint(HostPaths(proc=tmp_path))


@pytest.mark.netns  # root: creates a cgroup
def test_container_cgroup_is_summed(fakes: Fakes) -> None:
    root = Path("/sys/fs/cgroup")
    name = f"kubepods-cnstest{os.getpid()}"
    made: list[Path] = []
    for ctrl in ("memory", "cpuacct"):
        if (root / ctrl).is_dir():
            made.append(root / ctrl / name)
    if not made and (root / "cgroup.procs").exists():
        made.append(root / name)
    assert made, "no cgroup v1 memory/cpuacct nor v2 hierarchy to test with"
    for d in made:
        d.mkdir()
    p = helper = None
    try:
        p = fakes.start("cnstest-agent", mib=30, spin=True, cgroups=tuple(made))
        helper = fakes.start("cnstest-sidecar", mib=20, cgroups=tuple(made))  # same container, other name
        s = CniFootprintSampler(HostPaths(), names=NAMES, rescan_seconds=3600)
        s.sample(time.time_ns())
        time.sleep(0.5)
        out = s.sample(time.time_ns())
        mem = by(out, "cni_cgroup_memory_bytes", "cnstest-agent")
        assert mem is not None
        assert mem >= (30 + 20) << 20  # both processes of the container are counted
        cpu = by(out, "cni_cgroup_cpu_millicores", "cnstest-agent")
        assert cpu is not None
        assert cpu > 50
    finally:
        for q in (p, helper):
            if q is not None:
                fakes.stop(q)
        for d in made:
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except OSError:
                    time.sleep(0.05)


def test_fake_proc_root_with_hostile_files(tmp_path: Path) -> None:
    """A configurable proc root (DaemonSet: /host/proc): a well-formed process is read, a torn stat
    file and a garbage cgroup file cost nothing else."""
    good = tmp_path / "42"
    good.mkdir()
    (good / "comm").write_text("kube-proxy\n")
    stat = "42 (kube-proxy) S 1 42 42 0 -1 4194560 0 0 0 0 150 50 0 0 20 0 9 0 777 0 2560 " + "0 " * 30
    (good / "stat").write_text(stat)
    (good / "cgroup").write_text("garbage-without-colons\n0::/kubepods.slice/x.scope\n")
    bad = tmp_path / "43"
    bad.mkdir()
    (bad / "comm").write_text("flanneld\n")
    (bad / "stat").write_text("43 (flanneld) S 1")
    s = CniFootprintSampler(HostPaths(proc=tmp_path, sys=tmp_path / "sys"), rescan_seconds=3600)
    out = s.sample(time.time_ns())
    assert by(out, "cni_rss_bytes", "kube-proxy") == 2560 * os.sysconf("SC_PAGE_SIZE")
    assert by(out, "cni_rss_bytes", "flanneld") is None
    assert [t.name for t in s.tracked.values()] == ["kube-proxy"]
