"""The command lines of the lab's Kubernetes components, and why each unusual flag is there.

Addresses: the API server on ``API_IP`` (a fabric-bridge address beside the collector, 198.18.0.2,
and the lab DNS, 198.18.0.3); etcd on the fabric namespace's own loopback; kube-proxy's /metrics and
/healthz on the addresses of each node's namespace (its lab address and loopback). Nothing binds in
the host namespace.
"""

from __future__ import annotations

import os
from pathlib import Path

from cniscope.lab import addressing as addr
from cniscope.lab.kube import pki

API_IP = "198.18.0.4"
API_PORT = 6443
ETCD_CLIENT_URL = "https://127.0.0.1:2379"
ETCD_PEER_URL = "http://127.0.0.1:2380"
SERVICE_CIDR = str(addr.SERVICE_NET)
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
PROXY_MODES = ("iptables", "nftables")
PROXY_METRICS_PORT = 10249
PROXY_HEALTHZ_PORT = 10256
ROLE_PREFIX = "kube:"
ADMIN_USER = "cniscope-lab-admin"

KERNEL_NOTES = {
    "kube-proxy conntrack.maxPerCore: 0": (
        "nf_conntrack_max can be written only from the host's network namespace: without the flag "
        "kube-proxy exits in a node namespace with 'open /proc/sys/net/netfilter/nf_conntrack_max: "
        "permission denied'; 0 (--conntrack-max-per-core=0) leaves it alone. (The conntrack TCP timeouts are per namespace: "
        "kube-proxy sets them in each node namespace as on a real node.)"),
    "kube-proxy --proxy-mode=iptables|nftables": (
        "ipvs mode cannot run: this kernel has no IPVS (and no loadable modules) and there is no "
        "ipset binary ('can't use the IPVS proxier: error getting ipset version')"),
}


class Flags:
    """argv builders for one lab's Kubernetes directory (``<lab dir>/kube``)."""

    def __init__(self, kube_dir: Path, paths: pki.Paths) -> None:
        self.dir = kube_dir
        self.paths = paths

    def kubeconfig(self, who: str) -> Path:
        return self.dir / f"{who}.kubeconfig"

    def exe(self, binary: Path, component: str) -> str:
        """The harness under the component's own name (``<kube dir>/bin/kube-proxy`` → the binary, which
        dispatches on argv[0]), so the process is ``kube-proxy`` by name in ps and /proc/PID/comm, as
        on a node, where the agent finds it."""
        link, target = self.dir / "bin" / component, binary.resolve()
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink() or Path(os.readlink(link)) != target:
            tmp = link.with_name(f".{component}.tmp")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(target)
            os.replace(tmp, link)
        return str(link)

    def etcd_argv(self, binary: Path) -> list[str]:
        p = self.paths
        return [self.exe(binary, "etcd"), "--name=lab", f"--data-dir={self.dir / 'etcd'}",
                f"--listen-client-urls={ETCD_CLIENT_URL}", f"--listen-peer-urls={ETCD_PEER_URL}",
                f"--cert-file={p.crt('etcd-server')}", f"--key-file={p.key('etcd-server')}",
                f"--trusted-ca-file={p.ca_crt}", "--client-cert-auth",
                "--unsafe-no-fsync"]   # disposable data on tmpfs

    def apiserver_argv(self, binary: Path) -> list[str]:
        p = self.paths
        return [
            self.exe(binary, "kube-apiserver"),
            # the kubernetes Service's endpoint: must not be loopback (the Endpoints object refuses
            # 127.0.0.0/8), so the API server binds and advertises its fabric address
            f"--advertise-address={API_IP}", f"--bind-address={API_IP}", f"--secure-port={API_PORT}",
            f"--etcd-servers={ETCD_CLIENT_URL}", f"--etcd-cafile={p.ca_crt}",
            f"--etcd-certfile={p.crt('apiserver-etcd-client')}",
            f"--etcd-keyfile={p.key('apiserver-etcd-client')}",
            f"--tls-cert-file={p.crt('apiserver')}", f"--tls-private-key-file={p.key('apiserver')}",
            f"--client-ca-file={p.ca_crt}",
            f"--service-account-issuer={SA_ISSUER}", f"--service-account-key-file={p.sa_pub}",
            f"--service-account-signing-key-file={p.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            # the aggregation layer's request-header authentication, as kubeadm configures it
            f"--requestheader-client-ca-file={p.crt('front-proxy-ca')}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={p.crt('front-proxy-client')}",
            f"--proxy-client-key-file={p.key('front-proxy-client')}",
            "--enable-admission-plugins=NodeRestriction",   # on top of the default set
            "--allow-privileged=true",                      # the agents' DaemonSet is privileged
            f"--cert-dir={self.dir / 'apiserver-certs'}",
            "--profiling=false",
        ]

    def controller_manager_argv(self, binary: Path) -> list[str]:
        p = self.paths
        kc = self.kubeconfig("controller-manager")
        return [
            self.exe(binary, "kube-controller-manager"),
            f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1", f"--cert-dir={self.dir / 'controller-manager-certs'}",
            f"--service-account-private-key-file={p.sa_key}", f"--root-ca-file={p.ca_crt}",
            "--use-service-account-credentials=true",
            f"--cluster-signing-cert-file={p.ca_crt}", f"--cluster-signing-key-file={p.ca_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--leader-elect=false", "--profiling=false",
        ]

    def scheduler_argv(self, binary: Path) -> list[str]:
        # DaemonSet pods carry node affinity and are bound by the scheduler, not their controller
        kc = self.kubeconfig("scheduler")
        return [
            self.exe(binary, "kube-scheduler"),
            f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1", f"--cert-dir={self.dir / 'scheduler-certs'}",
            "--leader-elect=false", "--profiling=false",
        ]

    def kube_proxy_config(self) -> Path:
        """kube-proxy's KubeProxyConfiguration (``cniscope.lab.kube.addons.kube_proxy_config``)."""
        return self.dir / "kube-proxy" / "config.conf"

    def kube_proxy_argv(self, binary: Path, node_name: str) -> list[str]:
        # as kubeadm runs it: the shared configuration (also the ConfigMap kube-system/kube-proxy)
        # and the node's name; the configuration holds the mode, the addresses and conntrack (KERNEL_NOTES)
        return [self.exe(binary, "kube-proxy"), f"--config={self.kube_proxy_config()}",
                f"--hostname-override={node_name}"]
