"""What a kubeadm cluster holds in kube-system about its add-ons, made real in the lab.

* kube-proxy reads its settings from ``<kube dir>/kube-proxy/config.conf`` (``--config``, plus
  ``--hostname-override`` per node, as kubeadm runs it); the same text is the ``config.conf`` key of
  the ConfigMap ``kube-system/kube-proxy``, so what the API says about kube-proxy's mode is what the
  running kube-proxy was configured with. A DaemonSet ``kube-system/kube-proxy`` (host network, every
  node) stands for the per-node processes: its pods are scheduled by the real scheduler and reported
  Running by the kubelet stand-in, and its annotation names the lab process that is its container.
  Together they are what the product's fingerprint reads in a kubeadm cluster.
* ``kube-system/kube-dns`` at the lab DNS ClusterIP (198.18.64.2) with an EndpointSlice naming the
  lab's dnsmasq: reserves the address the lab's resolv.conf names, and kube-proxy forwards it as in a
  cluster.

Objects are created once and updated in place (a second ``lab up`` changes nothing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cniscope.lab.kube.apiclient import ApiError, Client, name_path
from cniscope.lab.kube.component_flags import PROXY_HEALTHZ_PORT, PROXY_METRICS_PORT

KS = "kube-system"
LAB_PROCESS_ANNOTATION = "lab.cniscope.dev/process"


def kube_proxy_config(mode: str, kubeconfig: Path) -> str:
    """kube-proxy's KubeProxyConfiguration for every lab node (YAML, as in kubeadm's ConfigMap).

    Listens on all addresses *of the node's namespace* (its lab address and loopback), so the metrics
    are on ``<node IP>:10249`` and, as on a real node, on ``127.0.0.1:10249`` where the agent looks by
    default. ``conntrack.maxPerCore: 0``: see ``component_flags.KERNEL_NOTES``."""
    return "\n".join([
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1",
        "kind: KubeProxyConfiguration",
        f"mode: {mode}",
        "bindAddress: 0.0.0.0",
        f"metricsBindAddress: 0.0.0.0:{PROXY_METRICS_PORT}",
        f"healthzBindAddress: 0.0.0.0:{PROXY_HEALTHZ_PORT}",
        "clientConnection:",
        f"  kubeconfig: {kubeconfig}",
        "conntrack:",
        "  maxPerCore: 0",
        "nodePortAddresses:",
        "  - primary",
        "",
    ])


def kube_proxy_objects(config_text: str, version: str, lab: str) -> list[tuple[str, dict[str, Any]]]:
    """(collection path, object) for kube-proxy's ConfigMap and DaemonSet."""
    labels = {"k8s-app": "kube-proxy", "cniscope.dev/lab": lab}
    cm = {"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": "kube-proxy", "namespace": KS, "labels": labels},
          "data": {"config.conf": config_text}}
    ds = {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "kube-proxy", "namespace": KS, "labels": labels,
                     "annotations": {LAB_PROCESS_ANNOTATION: "kube:proxy:<node> (cniscope lab status)"}},
        "spec": {
            "selector": {"matchLabels": {"k8s-app": "kube-proxy"}},
            "template": {
                "metadata": {"labels": {"k8s-app": "kube-proxy"}},
                "spec": {
                    "hostNetwork": True,
                    "priorityClassName": "system-node-critical",
                    "automountServiceAccountToken": False,
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [{
                        "name": "kube-proxy",
                        "image": f"registry.k8s.io/kube-proxy:{version}",
                        "command": ["/usr/local/bin/kube-proxy", "--config=/var/lib/kube-proxy/config.conf",
                                    "--hostname-override=$(NODE_NAME)"],
                        "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                        "securityContext": {"privileged": True},
                    }],
                },
            },
        },
    }
    return [(f"/api/v1/namespaces/{KS}/configmaps", cm), (f"/apis/apps/v1/namespaces/{KS}/daemonsets", ds)]


def kube_dns_objects(lab: str) -> list[tuple[str, dict[str, Any]]]:
    from cniscope.lab.labdns import DNS_IP, KUBE_DNS_IP

    ports = [{"name": f"dns-{p.lower()}", "port": 53, "protocol": p} for p in ("UDP", "TCP")]
    return [
        (f"/api/v1/namespaces/{KS}/services", {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": KS,
                         "labels": {"k8s-app": "kube-dns", "cniscope.dev/lab": lab}},
            "spec": {"clusterIP": KUBE_DNS_IP, "ports": [{**p, "targetPort": 53} for p in ports]}}),
        (f"/apis/discovery.k8s.io/v1/namespaces/{KS}/endpointslices", {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kube-dns-lab", "namespace": KS,
                         "labels": {"kubernetes.io/service-name": "kube-dns",
                                    "endpointslice.kubernetes.io/managed-by": "lab.cniscope.dev"}},
            "addressType": "IPv4", "ports": ports,
            "endpoints": [{"addresses": [DNS_IP], "conditions": {"ready": True}}]}),
    ]


def ensure(api: Client, objects: list[tuple[str, dict[str, Any]]]) -> None:
    """Create each object; one that exists gets the object's data/spec merged in."""
    for path, obj in objects:
        try:
            api.create(path, obj)
        except ApiError as exc:
            if exc.status != 409:
                raise
            patch: dict[str, Any] = {k: obj[k] for k in ("data", "spec") if k in obj and obj["kind"] != "Service"}
            if patch:
                api.merge_patch(f"{path}/{name_path(obj['metadata']['name'])}", patch)
