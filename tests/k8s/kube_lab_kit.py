"""Helpers for tests against a Kubernetes lab: the harness binary, polling with a deadline, a whole
lab as ``cniscope lab up --kubernetes`` makes it, and product code run inside a lab namespace (the
API server listens only inside the lab, so product code reaches it from there, as a pod would)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from cniscope.lab import netns, procs
from cniscope.lab.kube import harness, runtime
from cniscope.lab.kube.apiclient import ApiError
from cniscope.lab.kube.control_plane import KubeLab
from cniscope.lab.kube.install import LabInstall
from cniscope.lab.lab import Lab, LabSpec
from tests.caps import missing
from tests.conftest import new_lab_name

T = TypeVar("T")


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 60.0, every: float = 0.3) -> T:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            got = fn()
            if got:
                return got
            last = got
        except (ApiError, OSError, subprocess.SubprocessError) as exc:
            last = exc
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f}s (last: {last!r})")


def harness_binary() -> Path:
    if os.environ.get(harness.ENV):
        return harness.binary()
    if shutil.which("go") is None and not Path("/usr/local/go/bin/go").exists():
        missing("no Go toolchain to build the Kubernetes harness and no $CNISCOPE_KUBE_HARNESS")
    return harness.binary()


@contextmanager
def kubernetes_lab(state_root: Path, mode: str = "iptables", *, nodes: int = 2,
                   pods_per_node: int = 2) -> Iterator[tuple[KubeLab, LabInstall]]:
    """What ``cniscope lab up --kubernetes`` builds: control plane, kube-proxy in ``mode``, the install
    from daemonset/ applied, a collector and agents using the API. Afterwards ``lab down`` must leave no
    process (the pods' included), namespace or pod cgroup behind."""
    from cniscope.cli.lab_cmd import wait_nodes

    binary = harness_binary()
    lab = Lab(LabSpec(name=new_lab_name(), nodes=nodes, pods_per_node=pods_per_node), state_root=state_root)
    recs: list[procs.ProcRecord] = []
    pod_pids: list[int] = []
    saved = {var: os.environ.get(var) for var in ("CNISCOPE_TOKEN_FILE", "CNISCOPE_TOKEN")}
    try:
        lab.up()
        kube = KubeLab(lab)
        kube.up(binary=binary, proxy_mode=mode)
        install = LabInstall(kube)
        install.apply()
        # people-facing calls present the lab operator's token, as the CLI does for a Kubernetes lab
        os.environ.pop("CNISCOPE_TOKEN", None)
        os.environ["CNISCOPE_TOKEN_FILE"] = str(install.people_token)
        lab.start_cluster(sample_interval=1.0, agent_env=install.agent_env, collector_env=install.collector_env())
        try:
            wait_nodes(lab.local_collector, nodes, timeout=90)
        except Exception as exc:
            logs = "".join(f"\n--- {p.name}:\n" + p.read_text(errors="replace")[-2500:]
                           for p in sorted((lab.dir / "logs").glob("*.log"))
                           if p.name.startswith(("agent", "collector", "kube-kubelet")))
            raise AssertionError(f"{exc}{logs}") from None
        yield kube, install
    finally:
        for var, value in saved.items():
            os.environ.pop(var, None)
            if value is not None:
                os.environ[var] = value
        recs = [r for r in (lab.record(p["role"]) for p in lab.status()["processes"]) if r is not None]
        pod_pids = pod_processes(lab.spec.name)
        lab.down()
    assert pod_pids, "the lab ran no pod process"
    assert not [r.role for r in recs if procs.alive(r)], "processes left running after lab down"
    assert not [p for p in pod_pids if Path(f"/proc/{p}").exists()], "pod processes left after lab down"
    assert not [n for n in lab.namespaces() if netns.exists(n)], "namespaces left after lab down"
    cg = runtime.lab_cgroup(lab.spec.name)
    assert cg is None or not cg.exists(), f"pod cgroups left after lab down: {cg}"


def pod_processes(lab: str) -> list[int]:
    """The PIDs in a lab's pod cgroups."""
    return [int(p) for d in runtime.pod_cgroups(lab) for p in (d / "cgroup.procs").read_text().split()]


def run_in(ns: str, env: dict[str, str], code: str, timeout: float = 120.0) -> Any:
    """Run Python ``code`` inside lab namespace ``ns`` with ``env`` added; the JSON of its last line."""
    proc = subprocess.run(netns.nsenter_argv(ns, [sys.executable, "-c", code]), env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])
