"""The embedded lab: a small "cluster" made of network namespaces on one Linux machine.

    <p>-fabric   bridge br0 (198.18.0.2, the collector's address), one port per node
    <p>-nodeI    eth0 198.18.0.(10+I) on the fabric; routes to other nodes' pod subnets; p1..pN to pods
    <p>-podI-J   eth0 198.19.I.(10+J)/32, route 198.18.0.0/15 via the node — and no default route

Every link is created inside its target namespaces, nothing appears in the host namespace, and
``down`` removes every namespace, process and file the lab made.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cniscope.core.errors import LabError
from cniscope.lab import addressing as addr
from cniscope.lab import lab_cgroup, lab_network, labdns, netns, procs
from cniscope.lab.lab_node import LabNode
from cniscope.lab.socklb import sock_lb

STATE_ROOT = Path(os.environ.get("CNISCOPE_LAB_DIR", "/run/cniscope/lab"))
DEFAULT_LAB = "cniscope"


@dataclass
class LabSpec:
    name: str = DEFAULT_LAB
    nodes: int = 3
    pods_per_node: int = 1

    def __post_init__(self) -> None:
        if not self.name.isalnum() or len(self.name) > 10:
            raise LabError(f"lab name must be 1-10 letters/digits, got {self.name!r}")
        if not 1 <= self.nodes <= addr.MAX_NODES:
            raise LabError(f"nodes must be 1..{addr.MAX_NODES}, got {self.nodes}")
        if not 1 <= self.pods_per_node <= addr.MAX_PODS_PER_NODE:
            raise LabError(f"pods per node must be 1..{addr.MAX_PODS_PER_NODE}")


class Lab:
    def __init__(self, spec: LabSpec | None = None, state_root: Path | None = None) -> None:
        self.spec = spec or LabSpec()
        self.dir = (state_root or STATE_ROOT) / self.spec.name
        self.prefix = "cns" if self.spec.name == DEFAULT_LAB else f"cns{self.spec.name}"

    @classmethod
    def existing(cls, name: str = "", state_root: Path | None = None) -> Lab:
        """The lab ``name`` ("" = the default lab) with the shape it was built with; the default
        shape when it is not up."""
        name = name or DEFAULT_LAB
        try:
            spec = json.loads(((state_root or STATE_ROOT) / name / "state.json").read_text())["spec"]
            return cls(LabSpec(name=name, nodes=spec["nodes"], pods_per_node=spec["pods_per_node"]), state_root)
        except (OSError, ValueError, KeyError, TypeError):
            return cls(LabSpec(name=name), state_root)

    # ---- names -----------------------------------------------------------------------------
    @property
    def fabric(self) -> str:
        return f"{self.prefix}-fabric"

    def node_ns(self, i: int) -> str:
        return f"{self.prefix}-node{i}"

    def pod_ns(self, i: int, j: int = 1) -> str:
        return f"{self.prefix}-pod{i}-{j}"

    @property
    def collector_address(self) -> str:
        return f"{addr.COLLECTOR_IP}:{addr.COLLECTOR_PORT}"

    @property
    def collector_socket(self) -> Path:
        return self.dir / "collector.sock"

    @property
    def local_collector(self) -> str:
        """Where people-facing clients in the host namespace reach the lab's collector."""
        return f"unix://{self.collector_socket}"

    def nodes(self) -> list[LabNode]:
        out = []
        for i in range(1, self.spec.nodes + 1):
            pods = [{"netns": self.pod_ns(i, j), "ip": addr.pod_ip(i, j)}
                    for j in range(1, self.spec.pods_per_node + 1)]
            out.append(LabNode(i, f"node{i}", self.node_ns(i), addr.node_ip(i), pods))
        return out

    def namespaces(self) -> list[str]:
        names = [self.fabric]
        for n in self.nodes():
            names.append(n.netns)
            names.extend(p["netns"] for p in n.pods)
        return names

    # ---- lifecycle -------------------------------------------------------------------------
    def up(self) -> dict[str, Any]:
        """Build the lab; a second call on a complete lab changes nothing."""
        if not netns.is_root():
            raise LabError("the lab needs root (network namespaces); run as root or with sudo")
        saved = self._load_state()
        if saved and saved.get("spec") != self._spec_json():
            raise LabError(
                f"lab {self.spec.name!r} exists with a different shape {saved.get('spec')}; "
                "run `cniscope lab down` first"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        fresh = not all(netns.exists(n) for n in self.namespaces())
        if fresh:
            lab_network.build(self.fabric, self.namespaces(), self.nodes())
        state = saved or {"spec": self._spec_json(), "procs": [], "created": time.time()}
        self._save_state(state)
        return self.status()

    def down(self) -> list[str]:
        """Stop every process the lab started (by PID), delete its namespaces and state."""
        removed: list[str] = []
        state = self._load_state() or {}
        for rec in reversed([procs.ProcRecord.from_json(p) for p in state.get("procs", [])]):
            procs.stop(rec)
            removed.append(f"process {rec.role} (pid {rec.pid})")
        for name in reversed(self.namespaces()):
            if netns.exists(name):
                netns.delete(name)
                removed.append(f"netns {name}")
        # namespaces of a differently-shaped earlier lab with the same name
        for name in netns.list_names():
            if name.startswith(self.prefix + "-"):
                netns.delete(name)
                removed.append(f"netns {name}")
        removed.extend(sock_lb.teardown(self.spec.name))  # detached before its cgroup goes
        from cniscope.lab.kube import runtime  # what a Kubernetes lab's pods left, if its kubelet died

        removed.extend(runtime.sweep(self.spec.name))
        removed.extend(lab_cgroup.remove(self.spec.name))
        removed.extend(f"file {d}/resolv.conf" for d in labdns.remove_files(self.namespaces()))
        if self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)
        return removed

    def status(self) -> dict[str, Any]:
        state = self._load_state()
        present = [n for n in self.namespaces() if netns.exists(n)]
        recs = [procs.ProcRecord.from_json(p) for p in (state or {}).get("procs", [])]
        return {
            "name": self.spec.name,
            "up": bool(state) and len(present) == len(self.namespaces()),
            "namespaces": present,
            "collector": self.collector_address,
            "collector_local": self.local_collector,
            "nodes": [
                {"name": n.name, "netns": n.netns, "host_ip": n.host_ip, "pods": n.pods}
                for n in self.nodes()
            ],
            "processes": [
                {"role": r.role, "pid": r.pid, "alive": procs.alive(r), "log": r.log} for r in recs
            ],
            "state_dir": str(self.dir),
        }

    # ---- processes -------------------------------------------------------------------------
    def spawn(self, role: str, ns: str | None, argv: Sequence[str],
              env: dict[str, str] | None = None) -> procs.ProcRecord:
        """Start a process inside ``ns`` (None: the host namespace) and record it for ``down``."""
        state = self._load_state()
        if state is None:
            raise LabError(f"lab {self.spec.name!r} is not up")
        full = netns.nsenter_argv(ns, argv) if ns else list(argv)
        safe = role.replace(":", "-").replace("/", "-")
        rec = procs.spawn(role, full, self.dir / "logs" / f"{safe}.log", env)
        lab_cgroup.join(self.spec.name, rec.pid)  # what it starts from now on inherits the lab's cgroup
        state["procs"] = [p for p in state["procs"] if p["role"] != role] + [rec.to_json()]
        self._save_state(state)
        return rec

    def stop_role(self, role: str) -> bool:
        state = self._load_state() or {"procs": []}
        ok = True
        keep = []
        for p in state["procs"]:
            rec = procs.ProcRecord.from_json(p)
            if rec.role == role:
                ok = procs.stop(rec) and ok
            else:
                keep.append(p)
        if state.get("spec"):
            state["procs"] = keep
            self._save_state(state)
        return ok

    def record(self, role: str) -> procs.ProcRecord | None:
        for p in (self._load_state() or {}).get("procs", []):
            if p["role"] == role:
                return procs.ProcRecord.from_json(p)
        return None

    def start_cluster(self, *, db: Path | None = None, extra_agent_args: Sequence[str] = (),
                      extra_collector_args: Sequence[str] = (), sample_interval: float = 2.0,
                      tracers: Sequence[str] = (), tracer_nodes: Collection[str] | None = None,
                      agent_env: Callable[[LabNode], dict[str, str]] | None = None,
                      collector_env: dict[str, str] | None = None) -> None:
        """Start the collector in the fabric and one agent per node namespace. The collector serves
        this lab (``--lab``): its service-scaling runs load kube-proxy-style rules in the node namespaces.

        ``tracers`` (bcc tracer names; default CNISCOPE_TRACERS of this environment) run in the agents
        of ``tracer_nodes`` (default every node). A tracer sees the whole machine, so each lab agent's
        tracers watch its probe pod's namespace only, where that node's probes start: other nodes,
        other labs and the host stay out of its counts.

        ``agent_env`` (a Kubernetes lab, ``cniscope.lab.kube.install``): each agent's API environment; the
        agent then finds its probe pod's address and namespace through the API instead of being told.
        ``collector_env``: the collector's."""
        exe = [sys.executable, "-m", "cniscope.cli"]
        names = ",".join(tracers) if tracers else os.environ.get("CNISCOPE_TRACERS", "")
        dbp = db or (self.dir / "collector.db")
        if not self._alive("collector"):
            if self.collector_socket.exists():
                self.collector_socket.unlink()
            self.spawn("collector", self.fabric, [
                *exe, "collector", "--listen", self.collector_address,
                "--listen", self.local_collector, "--db", str(dbp), "--lab", self.spec.name, *extra_collector_args,
            ], env=collector_env)
        self.start_dns()
        for node in self.nodes():
            role = f"agent:{node.name}"
            if self._alive(role):
                continue
            pod = [] if agent_env else ["--pod-ip", node.pod_ip, "--pod-netns", str(netns.NETNS_DIR / node.pod_netns)]
            self.spawn(role, node.netns, [
                *exe, "agent", "--collector", self.collector_address, "--node", node.name,
                "--host-ip", node.host_ip, *pod, "--sample-interval", str(sample_interval), *extra_agent_args,
            ], env={"CNISCOPE_LAB": self.spec.name, **self._tracer_env(node, names, tracer_nodes),
                    **(agent_env(node) if agent_env else {})})

    @staticmethod
    def _tracer_env(node: LabNode, names: str, only: Collection[str] | None) -> dict[str, str]:
        if not names or (only is not None and node.name not in only):
            return {"CNISCOPE_TRACERS": ""}
        return {"CNISCOPE_TRACERS": names, "CNISCOPE_TRACER_NETNS": str(netns.NETNS_DIR / node.pod_netns)}

    def start_dns(self, wait: float = 5.0) -> str:
        """dnsmasq for the lab's names behind a kube-dns-like ClusterIP (see ``labdns``); a second
        call changes nothing. Returns the kube-dns ClusterIP."""
        binary = labdns.dnsmasq_binary()
        labdns.configure(self.fabric, self.nodes())
        if not self._alive(labdns.ROLE):
            self.spawn(labdns.ROLE, self.fabric, labdns.dnsmasq_argv(binary, self.nodes()))
            labdns.wait_ready(self.fabric, lambda: self.record(labdns.ROLE), wait)
        return labdns.KUBE_DNS_IP

    def _alive(self, role: str) -> bool:
        rec = self.record(role)
        return rec is not None and procs.alive(rec)

    # ---- state -----------------------------------------------------------------------------
    def services(self) -> dict[str, Any]:
        """The lab's own Services as ``lab_fronts`` recorded them; {} when it programmed none."""
        rec = (self._load_state() or {}).get("services")
        return dict(rec) if isinstance(rec, dict) else {}

    def record_services(self, rec: dict[str, Any]) -> None:
        state = self._load_state()
        if state is None:
            raise LabError(f"lab {self.spec.name!r} is not up")
        state["services"] = rec
        self._save_state(state)

    def _spec_json(self) -> dict[str, Any]:
        return {"nodes": self.spec.nodes, "pods_per_node": self.spec.pods_per_node}

    def _state_file(self) -> Path:
        return self.dir / "state.json"

    def _load_state(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self._state_file().read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _save_state(self, state: dict[str, Any]) -> None:
        tmp = self._state_file().with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self._state_file())


def existing_labs(state_root: Path | None = None) -> list[str]:
    root = state_root or STATE_ROOT
    try:
        return sorted(p.name for p in root.iterdir() if (p / "state.json").exists())
    except FileNotFoundError:
        return []
