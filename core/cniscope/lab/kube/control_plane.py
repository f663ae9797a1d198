"""A real Kubernetes control plane and real kube-proxy inside a lab (``lab up --kubernetes``).

    fabric namespace   etcd on the fabric's loopback (127.0.0.1:2379, mutual TLS)
                       kube-apiserver on API_IP:6443 (a bridge address beside the collector)
                       kube-controller-manager (serving on the fabric's 127.0.0.1:10257)
                       kube-scheduler (127.0.0.1:10259): binds pods, DaemonSet pods included
                       the kubelet stand-in (cniscope.lab.kube.kubelet_standin): Nodes, Leases, pods
                       (run in lab pod namespaces), pod status, projected ServiceAccount tokens
    node namespaces    kube-proxy per node (iptables or nftables mode, kubeadm-style --config that is
                       also the ConfigMap kube-system/kube-proxy), /metrics on <node IP>:10249
    kube-system        kube-proxy's ConfigMap and DaemonSet, kube-dns (cniscope.lab.kube.addons)

The product's install from daemonset/ is applied on top by :mod:`cniscope.lab.kube.install`.

Every binary is the harness ``cniscope-kube`` (see :mod:`cniscope.lab.kube.harness`); every process
is started through ``Lab.spawn`` under a ``kube:`` role, so ``lab down`` stops it by its PID and
removes its files (everything lives under ``<lab dir>/kube``). Nothing listens outside the lab's
namespaces: host-side code reaches the API through :meth:`KubeLab.client` (a socket made inside the
fabric namespace) or :meth:`KubeLab.kubectl` (kubectl run inside it).

The Service CIDR is the lab's reserved Service range (``addressing.SERVICE_NET``, 198.18.64.0/18), so
the ``kubernetes`` Service gets 198.18.64.1, the address the lab's DNS already answers for
``kubernetes.default.svc.cluster.local``. Lab pod subnets (198.19.I.0/24) and the fabric
(198.18.0.0/24) stay outside it.

Command lines, and this kernel's limits with the flags that avoid them (``KERNEL_NOTES``), are in
:mod:`cniscope.lab.kube.component_flags`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cniscope.core.errors import LabError
from cniscope.lab import addressing as addr
from cniscope.lab import netns, procs
from cniscope.lab.kube import addons, harness, pki, runtime
from cniscope.lab.kube.apiclient import ApiError, Client
from cniscope.lab.kube.component_flags import (
    ADMIN_USER,
    API_IP,
    API_PORT,
    PROXY_MODES,
    ROLE_PREFIX,
    SERVICE_CIDR,
    Flags,
)

if TYPE_CHECKING:
    from cniscope.lab.lab import Lab

def _kube_version() -> str:
    return harness.kubernetes_version()


class KubeLab:
    """The Kubernetes pieces of one lab; files under ``<lab dir>/kube``."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.dir = lab.dir / "kube"
        self.paths = pki.Paths(self.dir / "pki")
        self.flags = Flags(self.dir, self.paths)

    # ---- names -----------------------------------------------------------------------------
    @property
    def server(self) -> str:
        return f"https://{API_IP}:{API_PORT}"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.dir / "admin.kubeconfig"

    @property
    def state_file(self) -> Path:
        return self.dir / "kube.json"

    def kubeconfig(self, who: str) -> Path:
        return self.dir / f"{who}.kubeconfig"

    @property
    def token_root(self) -> Path:
        """Where the stand-in projects ServiceAccount tokens (:mod:`cniscope.lab.kube.tokens`)."""
        return self.dir / "serviceaccounts"

    @property
    def fabric_netns(self) -> Path:
        return netns.NETNS_DIR / self.lab.fabric

    # ---- PKI -------------------------------------------------------------------------------
    def write_pki(self) -> None:
        """CA, serving and client certificates, the SA key pair and the kubeconfigs (idempotent)."""
        ca = pki.CA(self.paths, lab_name=self.lab.spec.name)
        kubernetes_ip = str(addr.SERVICE_NET.network_address + 1)
        ca.issue("apiserver", "kube-apiserver", server=True,
                 dns=["kubernetes", "kubernetes.default", "kubernetes.default.svc",
                      "kubernetes.default.svc.cluster.local", "localhost"],
                 ips=[API_IP, kubernetes_ip, "127.0.0.1"])
        ca.issue("etcd-server", "etcd", server=True, client=True, dns=["localhost"], ips=["127.0.0.1"])
        ca.issue("apiserver-etcd-client", "kube-apiserver-etcd-client", client=True)
        pki.service_account_keys(self.paths)
        pki.CA(self.paths, lab_name=self.lab.spec.name, stem="front-proxy-ca").issue(
            "front-proxy-client", "front-proxy-client", client=True)
        for stem, cn, orgs in (
            ("admin", ADMIN_USER, ("system:masters",)),
            ("controller-manager", "system:kube-controller-manager", ()),
            ("scheduler", "system:kube-scheduler", ()),
            ("kube-proxy", "system:kube-proxy", ()),
        ):
            crt, key = ca.issue(stem, cn, orgs=orgs, client=True)
            pki.kubeconfig(self.kubeconfig(stem), server=self.server, ca=self.paths.ca_crt,
                           cert=crt, key=key, user=cn)
        for node in self.lab.nodes():
            ca.issue(f"node-{node.name}", f"system:node:{node.name}", orgs=("system:nodes",),
                     client=True)

    def kubelet_config(self) -> Path:
        """The kubelet stand-in's configuration: one identity and address set per node."""
        from cniscope.core.version import VERSION as runtime_version

        cfg = {
            "server": self.server,
            "ca": str(self.paths.ca_crt),
            "kubelet_version": _kube_version(),
            "runtime_version": runtime_version,
            "nodes": [{
                "name": n.name, "host_ip": n.host_ip, "pod_cidr": addr.pod_subnet(n.index),
                "cert": str(self.paths.crt(f"node-{n.name}")), "key": str(self.paths.key(f"node-{n.name}")),
                "pod_ips": [p["ip"] for p in n.pods],
                "pod_netns": {p["ip"]: str(netns.NETNS_DIR / p["netns"]) for p in n.pods},
                "labels": {"cniscope.dev/lab": self.lab.spec.name},
            } for n in self.lab.nodes()],
            "lab": self.lab.spec.name,
            "log_dir": str(self.lab.dir / "logs" / "pods"),
            "token_dir": str(self.token_root),
        }
        path = self.dir / "kubelet.json"
        path.write_text(json.dumps(cfg, indent=2))
        return path

    # ---- lifecycle -------------------------------------------------------------------------
    def up(self, *, proxy_mode: str = "iptables", binary: Path | None = None,
           timeout: float = 120.0) -> dict[str, Any]:
        """Start (or complete) the control plane, the kubelet stand-in and kube-proxy on every node."""
        if proxy_mode not in PROXY_MODES:
            raise LabError(f"kube-proxy mode must be one of {', '.join(PROXY_MODES)}, not {proxy_mode!r}")
        binary = binary or harness.binary()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.write_pki()
        self._configure_fabric()
        self._start("etcd", self.lab.fabric, self.flags.etcd_argv(binary))
        self._start("apiserver", self.lab.fabric, self.flags.apiserver_argv(binary))
        admin = self.client()
        try:
            self._wait(lambda: admin.wait_ready(timeout=2.0), "apiserver", timeout)
            self._start("controller-manager", self.lab.fabric, self.flags.controller_manager_argv(binary))
            self._start("scheduler", self.lab.fabric, self.flags.scheduler_argv(binary))
            self._start("kubelet", self.lab.fabric,
                        [sys.executable, "-m", "cniscope.lab.kube.kubelet_standin", str(self.kubelet_config())])
            self._write_kube_proxy_config(proxy_mode)
            for node in self.lab.nodes():
                self._start(f"proxy:{node.name}", node.netns, self.flags.kube_proxy_argv(binary, node.name))
            # usable when this returns: pods can be created (the serviceaccount controller made
            # default/default) and every lab node is a Ready Node
            self._wait(lambda: admin.get("/api/v1/namespaces/default/serviceaccounts/default"),
                       "controller-manager", timeout)
            self._wait(lambda: self._nodes_ready(admin), "kubelet", timeout)
            addons.ensure(admin, addons.kube_proxy_objects(self.flags.kube_proxy_config().read_text(),
                                                           _kube_version(), self.lab.spec.name)
                          + addons.kube_dns_objects(self.lab.spec.name))
        finally:
            admin.close()
        state = {"server": self.server, "api_address": f"{API_IP}:{API_PORT}",
                 "kubeconfig": str(self.admin_kubeconfig), "binary": str(binary),
                 "kubernetes_version": _kube_version(), "proxy_mode": proxy_mode,
                 "service_cidr": SERVICE_CIDR, "netns": self.lab.fabric}
        self.state_file.write_text(json.dumps(state, indent=2))
        return self.status() or state

    def _write_kube_proxy_config(self, mode: str) -> None:
        path = self.flags.kube_proxy_config()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(addons.kube_proxy_config(mode, self.kubeconfig("kube-proxy")))

    def _nodes_ready(self, api: Client) -> None:
        items = api.get("/api/v1/nodes")["items"]
        ready = {n["metadata"]["name"] for n in items
                 if any(c["type"] == "Ready" and c["status"] == "True"
                        for c in n.get("status", {}).get("conditions", []))}
        missing = [n.name for n in self.lab.nodes() if n.name not in ready]
        if missing:
            raise TimeoutError(f"nodes not Ready yet: {', '.join(missing)}")

    def _configure_fabric(self) -> None:
        fab = self.lab.fabric
        if f" {API_IP}/" not in netns.exec_in(fab, ["ip", "-o", "-4", "addr", "show", "dev", "br0"]):
            netns.batch(fab, [f"addr add {API_IP}/24 dev br0"])
        # pods reach the API server (directly or through the kubernetes Service): routes back to them
        netns.batch(fab, [f"route replace {addr.pod_subnet(n.index)} via {n.host_ip} dev br0"
                          for n in self.lab.nodes()])
        # nodes send the Service range towards the fabric, as a node's default route would: a ClusterIP
        # needs a route before kube-proxy's OUTPUT rules can rewrite it (lab nodes have no default route)
        for n in self.lab.nodes():
            netns.batch(n.netns, [f"route replace {addr.SERVICE_NET} via {addr.COLLECTOR_IP} dev eth0"])

    def _start(self, name: str, ns: str, argv: Sequence[str]) -> procs.ProcRecord:
        role = ROLE_PREFIX + name
        rec = self.lab.record(role)
        if rec is not None and procs.alive(rec):
            return rec
        return self.lab.spawn(role, ns, argv)

    def _wait(self, check: Any, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            self._assert_alive(what)
            try:
                check()
                return
            except (TimeoutError, ApiError, OSError) as exc:
                last = exc
            time.sleep(0.2)
        raise LabError(f"{what} not ready within {timeout:.0f}s: {last}\n{self.log_tail(what)}")

    def _assert_alive(self, what: str) -> None:
        for name in ("etcd", what):
            rec = self.lab.record(ROLE_PREFIX + name)
            if rec is not None and not procs.alive(rec):
                raise LabError(f"{name} exited:\n{self.log_tail(name)}")

    def log_tail(self, name: str, chars: int = 3000) -> str:
        rec = self.lab.record(ROLE_PREFIX + name)
        if rec is None or not Path(rec.log).exists():
            return ""
        return f"--- {name} log ({rec.log}):\n" + Path(rec.log).read_text(errors="replace")[-chars:]

    def roles(self) -> list[str]:
        """The lab process roles of the Kubernetes pieces, in start order."""
        names = ["etcd", "apiserver", "controller-manager", "scheduler", "kubelet"]
        names += [f"proxy:{n.name}" for n in self.lab.nodes()]
        return [ROLE_PREFIX + n for n in names]

    def stop(self) -> list[str]:
        """Stop only the Kubernetes processes, by their recorded PIDs, and what the pods ran (``lab down``
        stops all)."""
        stopped = []
        for role in reversed(self.roles()):
            if self.lab.record(role) is not None:
                self.lab.stop_role(role)
                stopped.append(role)
        return stopped + runtime.sweep(self.lab.spec.name)

    def restart(self, name: str = "apiserver", timeout: float = 120.0) -> tuple[int, int]:
        """Stop one Kubernetes process by its recorded PID and start it again with the same command line
        (the API server: until it is ready again); its old and new PIDs."""
        old = self.lab.record(ROLE_PREFIX + name)
        if old is None:
            raise LabError(f"lab {self.lab.spec.name!r} has no {name}")
        self.lab.stop_role(old.role)
        new = self.lab.spawn(old.role, None, old.argv)   # argv already enters its namespace
        if name == "apiserver":
            admin = self.client()
            try:
                self._wait(lambda: admin.wait_ready(timeout=2.0), name, timeout)
            finally:
                admin.close()
        return old.pid, new.pid

    # ---- use -------------------------------------------------------------------------------
    def client(self, who: str = "admin", timeout: float = 10.0) -> Client:
        """An API client for one of the lab's identities, connecting from the fabric namespace."""
        return Client(self.server, ca=self.paths.ca_crt, cert=self.paths.crt(who),
                      key=self.paths.key(who), timeout=timeout, netns=self.fabric_netns)

    def kubectl(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        """The harness' kubectl with the admin kubeconfig, run inside the fabric namespace."""
        st = self.status()
        if st is None:
            raise LabError(f"lab {self.lab.spec.name!r} has no Kubernetes control plane")
        argv = [st["binary"], "kubectl", f"--kubeconfig={self.admin_kubeconfig}", *args]
        return netns.exec_in(self.lab.fabric, argv, check=check, timeout=timeout)

    def status(self) -> dict[str, Any] | None:
        """What ``lab status`` reports for Kubernetes (API address, admin kubeconfig, version, kube-proxy
        mode, which processes are alive); None when the lab has none."""
        try:
            state: dict[str, Any] = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None
        alive = {}
        for role in self.roles():
            rec = self.lab.record(role)
            alive[role.removeprefix(ROLE_PREFIX)] = rec is not None and procs.alive(rec)
        state["processes"] = alive
        marker = self.dir / "install" / "applied"
        state["install"] = (f"kubectl apply -k {marker.parent}" if marker.exists() else "not applied")
        return state


def status(lab: Lab) -> dict[str, Any] | None:
    return KubeLab(lab).status()
