"""The lab's container runtime, used by the kubelet stand-in for pods in a lab pod namespace.

A pod that is not in the host network gets what a CRI runtime would give it, made of the lab's parts:

* a sandbox: a ``sleep`` process (the pause container) in the lab pod namespace whose address the
  pod was given, in a cgroup named after the pod UID —
  ``<cgroup v2>/cniscope-lab/<lab>/<node>/pod<uid>`` — so an agent finds the pod's network namespace
  as it does on a node: ``/proc/PID/ns/net`` of a process whose cgroup names the pod UID;
* its containers, when they run the lab's image (:data:`LAB_IMAGE`, what the lab's install overlay sets
  instead of the published one): the container's ``args`` run as ``cniscope`` of this checkout, in the
  same namespace and cgroup, as the pod's ``runAsUser``/``runAsGroup``, with the container's literal
  ``env`` and the downward-API fields a lab pod has. Other images get the sandbox only.

Host-network pods get no process: in the lab those are the lab's own processes (agents, kube-proxy).
Every process is a child of the stand-in, stopped by its PID (SIGTERM, then SIGKILL); :func:`sweep`
stops what a stand-in that died left in the lab's cgroups, by the PIDs listed there, and removes them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cniscope.lab import lab_cgroup as lab_cgroup_mod

LAB_IMAGE = "cniscope-lab.invalid/cniscope:checkout"
STOP_GRACE = 5.0


def cgroup_root() -> Path | None:
    """The cgroup v2 hierarchy (pure v2, or the ``unified`` one of a hybrid host); None without one."""
    return lab_cgroup_mod.cgroup2_mount()


def lab_cgroup(lab: str) -> Path | None:
    """The lab's cgroup (:mod:`cniscope.lab.lab_cgroup`); pods live in ``<node>/pod<uid>`` below it."""
    return lab_cgroup_mod.lab_cgroup(lab)


def pod_cgroups(lab: str) -> list[Path]:
    """Every pod cgroup of the lab (not ``processes``, which holds the lab's own processes)."""
    cg = lab_cgroup(lab)
    if cg is None or not cg.exists():
        return []
    return sorted(p for node in cg.iterdir() if node.is_dir() and node.name != lab_cgroup_mod.PROCESSES
                  for p in node.iterdir() if p.is_dir() and p.name.startswith("pod"))


def _pids(cg: Path) -> list[int]:
    try:
        return [int(x) for x in (cg / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def _stop_pids(pids: list[int], grace: float = STOP_GRACE) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_exists(p) for p in pids):
        for p in pids:
            _reap(p)
        time.sleep(0.05)
    for pid in pids:
        if _exists(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for p in pids:
        _reap(p)


def _exists(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def sweep(lab: str) -> list[str]:
    """Stop every process left in the lab's pod cgroups (by the PIDs they list) and remove those
    cgroups and their node directories; what was removed, for ``lab down``. The lab's own cgroup and
    its ``processes`` leaf are :mod:`cniscope.lab.lab_cgroup`'s."""
    done: list[str] = []
    for d in pod_cgroups(lab):
        pids = _pids(d)
        if pids:
            _stop_pids(pids)
            done.extend(f"pod process {p}" for p in pids)
        try:
            d.rmdir()
            done.append(f"cgroup {d}")
        except OSError:
            pass
        try:
            d.parent.rmdir()          # the node's directory, once its last pod is gone
        except OSError:
            pass
    return done


def _field(pod: Mapping[str, Any], ip: str, host_ip: str, path: str) -> str:
    return str({"spec.nodeName": pod["spec"].get("nodeName", ""), "metadata.name": pod["metadata"]["name"],
            "metadata.namespace": pod["metadata"]["namespace"], "metadata.uid": pod["metadata"]["uid"],
            "status.podIP": ip, "status.hostIP": host_ip,
            "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "")}.get(path, ""))


def container_env(pod: Mapping[str, Any], container: Mapping[str, Any], ip: str, host_ip: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for e in container.get("env") or []:
        if "value" in e:
            env[e["name"]] = str(e["value"])
        elif ref := (e.get("valueFrom") or {}).get("fieldRef"):
            env[e["name"]] = _field(pod, ip, host_ip, ref.get("fieldPath", ""))
    return env


class Runtime:
    """The containers of one lab node's pods; call from the stand-in's one thread."""

    def __init__(self, lab: str, node: str, log_dir: Path) -> None:
        cg = lab_cgroup(lab)
        self.base = None if cg is None else cg / node
        self.log_dir = log_dir
        self.procs: dict[str, list[subprocess.Popen[bytes]]] = {}   # pod uid -> its processes
        self.argv: dict[int, str] = {}                                # pid -> command line, for status

    def cgroup(self, uid: str) -> Path | None:
        return None if self.base is None else self.base / f"pod{uid}"

    def running(self, uid: str) -> bool:
        """A live sandbox for the pod (also one an earlier stand-in started)."""
        if any(p.poll() is None for p in self.procs.get(uid, [])):
            return True
        cg = self.cgroup(uid)
        return cg is not None and any(_exists(p) for p in _pids(cg))

    def exited(self, uid: str) -> list[str]:
        """Containers of the pod whose process ended (a container of the lab image that crashed)."""
        return [self.argv.get(p.pid, "") for p in self.procs.get(uid, [])[1:] if p.poll() is not None]

    def start(self, pod: Mapping[str, Any], netns: Path, ip: str, host_ip: str) -> None:
        """The pod's sandbox and lab-image containers in ``netns`` and the pod's cgroup."""
        uid = pod["metadata"]["uid"]
        cg = self.cgroup(uid)
        if cg is not None:
            cg.mkdir(parents=True, exist_ok=True)
        spec = pod["spec"]
        psc = spec.get("securityContext") or {}
        name = f"{pod['metadata']['namespace']}_{pod['metadata']['name']}"
        procs = [self._spawn([*self._nsenter(netns), "sleep", "infinity"], cg, f"{name}_sandbox", {}, psc)]
        for c in spec.get("containers", []):
            if c.get("image") != LAB_IMAGE:
                continue
            csc = {**psc, **(c.get("securityContext") or {})}
            cmd = list(c.get("command") or ["cniscope"])
            if cmd[0] in ("cniscope", "/usr/local/bin/cniscope"):
                cmd = [sys.executable, "-m", "cniscope.cli", *cmd[1:]]
            argv = [*self._nsenter(netns), *cmd, *(c.get("args") or [])]
            procs.append(self._spawn(argv, cg, f"{name}_{c['name']}", container_env(pod, c, ip, host_ip), csc))
        self.procs[uid] = procs

    def stop(self, uid: str) -> None:
        pids = [p.pid for p in self.procs.pop(uid, [])]
        cg = self.cgroup(uid)
        if cg is not None:
            pids = sorted(set(pids) | set(_pids(cg)))
        _stop_pids(pids)
        if cg is not None:
            try:
                cg.rmdir()
            except OSError:
                pass

    def uids(self) -> set[str]:
        """Pods with processes here (this stand-in's, or in a cgroup left by an earlier one)."""
        out = set(self.procs)
        if self.base is not None and self.base.exists():
            out |= {d.name.removeprefix("pod") for d in self.base.iterdir() if d.is_dir()}
        return out

    def stop_all(self) -> None:
        for uid in list(self.uids()):
            self.stop(uid)

    @staticmethod
    def _nsenter(netns: Path) -> list[str]:
        return ["nsenter", f"--net={netns}", "--"]

    def _spawn(self, argv: list[str], cg: Path | None, log_name: str, env: dict[str, str],
               sc: Mapping[str, Any]) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        user, group = sc.get("runAsUser"), sc.get("runAsGroup", sc.get("runAsUser"))
        if user is not None:   # nsenter needs root for setns; it drops to the pod's user before exec
            argv = [argv[0], f"--setuid={user}", f"--setgid={group}", *argv[1:]]
        base_env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "PYTHONPATH", "VIRTUAL_ENV")}
        with open(self.log_dir / f"{log_name}.log", "ab") as fh:
            proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env={**base_env, "HOME": "/tmp", **env})
        self.argv[proc.pid] = " ".join(argv)[-120:]
        if cg is not None:
            try:
                (cg / "cgroup.procs").write_text(str(proc.pid))
            except OSError as exc:
                print(f"pod cgroup {cg}: {exc}", flush=True)
        return proc
