"""The product's install (``daemonset/``) applied to a lab's API server, and what the lab's own agents
and collector need to use the API as the installed ones would.

:func:`write_overlay` writes a kustomize overlay under ``<kube dir>/install`` on top of
``daemonset/base`` (a relative path: kustomize refuses absolute ones) that changes only what the lab
must change:

* the image becomes :data:`~cniscope.lab.kube.runtime.LAB_IMAGE`, which the kubelet stand-in runs as
  this checkout's ``cniscope`` (the probe pods' ``cniscope probe-pod`` process really serves in the
  lab pod namespace);
* the collector Deployment is scaled to 0: the lab's collector is a process in the fabric namespace
  (a pod there would take a node's lab pod address and serve nothing).

:func:`apply` runs the harness' ``kubectl apply -k`` inside the lab; the namespaces, RBAC,
ValidatingAdmissionPolicy and DaemonSets are then the API server's to judge, and the DaemonSet
controller, the scheduler and the stand-in make the probe pods. The lab agents reach the API the way
a pod does: ``KUBERNETES_SERVICE_HOST`` is the ``kubernetes`` Service's ClusterIP (kube-proxy in the
node namespace forwards it to the API server), their API token is the one the stand-in projected for
their node's ``cniscope-agent`` pod (:mod:`cniscope.lab.kube.tokens`), and the token they present to
the collector is that pod's projected ``cniscope-token`` volume (audience ``cniscope``), as in the
DaemonSet. The lab's collector, a fabric process without a pod, gets a ``cniscope-collector`` token
from the TokenRequest API (24 h, written again at every ``lab up``), talks to the API server's address
directly, and checks identities as the install's Deployment says (``CNISCOPE_KUBE_AUTH``).

People reach it through the lab's local socket as someone the collector can check: the lab makes the
ServiceAccount ``cniscope/lab-operator``, binds it to the shipped ClusterRole ``cniscope-admin`` and
writes a 24-hour token for it (:meth:`LabInstall.people_token`), which the CLI presents when it talks
to the lab and no token of one's own is set.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cniscope.core.config import CollectorConfig, env_name
from cniscope.core.errors import LabError
from cniscope.lab.kube.apiclient import ApiError, Client, name_path
from cniscope.lab.kube.runtime import LAB_IMAGE
from cniscope.lab.kube.tokens import projected_path, token_dir, write_atomic

if TYPE_CHECKING:
    from cniscope.lab.kube.control_plane import KubeLab
    from cniscope.lab.lab_node import LabNode

REPO = Path(__file__).resolve().parents[4]
BASE = REPO / "daemonset" / "base"
NAMESPACE = "cniscope"
PROBE_NAMESPACE = "cniscope-probe"
AGENT_SA = "cniscope-agent"
COLLECTOR_SA = "cniscope-collector"
DAEMONSETS = ((NAMESPACE, "cniscope-agent"), (PROBE_NAMESPACE, "cniscope-probe"))
COLLECTOR_TOKEN_SECONDS = 86400
FABRIC = "fabric"   # the token directory of the lab's fabric processes
AGENT_TOKEN_VOLUME, AGENT_TOKEN_PATH = "cniscope-token", "token"   # the DaemonSet's projected token
OPERATOR_SA, OPERATOR_ROLE = "lab-operator", "cniscope-admin"


def published_image(base: Path = BASE) -> str:
    """The image name the base sets (its kustomization's ``newName``), which the overlay replaces."""
    m = re.search(r"^\s*newName:\s*(\S+)", (base / "kustomization.yaml").read_text(), re.M)
    return m.group(1) if m else "cniscope"


def write_overlay(kube_dir: Path, base: Path = BASE) -> Path:
    d = kube_dir / "install"
    d.mkdir(parents=True, exist_ok=True)
    name, tag = LAB_IMAGE.rsplit(":", 1)
    (d / "kustomization.yaml").write_text("\n".join([
        "# written by cniscope lab up --kubernetes: the install of daemonset/base, for this lab",
        "apiVersion: kustomize.config.k8s.io/v1beta1",
        "kind: Kustomization",
        "resources:",
        f"  - {os.path.relpath(base, d)}",
        "images:",
        f"  - name: {published_image(base)}",
        f"    newName: {name}",
        f"    newTag: {tag}",
        "patches:",
        "  - target: {kind: Deployment, name: cniscope-collector, namespace: cniscope}",
        "    patch: |-",
        "      - {op: replace, path: /spec/replicas, value: 0}",
        "",
    ]))
    return d


def daemonsets_ready(api: Client, nodes: int) -> str:
    """"" when every install DaemonSet has a ready pod on each of ``nodes`` nodes, else what is missing."""
    missing = []
    for ns, name in DAEMONSETS:
        ds = api.get(f"/apis/apps/v1/namespaces/{ns}/daemonsets/{name}")
        st = ds.get("status", {})
        if st.get("numberReady", 0) < nodes or st.get("desiredNumberScheduled", 0) < nodes:
            missing.append(f"{ns}/{name} {st.get('numberReady', 0)}/{nodes} ready")
    return ", ".join(missing)


def wait(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        last = check()
        if not last:
            return
        time.sleep(0.3)
    raise LabError(f"{what} not within {timeout:.0f}s: {last}")


def agent_token_dir(token_root: Path, node: str) -> Path:
    return token_dir(token_root, node, NAMESPACE, AGENT_SA)


def collector_token_dir(token_root: Path) -> Path:
    return token_dir(token_root, FABRIC, NAMESPACE, COLLECTOR_SA)


def issue_collector_token(api: Client, token_root: Path, ca: Path) -> Path:
    got = api.create(
        f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{name_path(COLLECTOR_SA)}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
         "spec": {"expirationSeconds": COLLECTOR_TOKEN_SECONDS}})
    d = collector_token_dir(token_root)
    write_atomic(d / "ca.crt", ca.read_text())
    write_atomic(d / "namespace", NAMESPACE)
    write_atomic(d / "token", got["status"]["token"])
    return d


def collector_settings(base: Path = BASE) -> dict[str, str]:
    """The install's identity settings for the collector: the Deployment's literal values of the
    collector's ``kube_*`` settings (``CNISCOPE_KUBE_AUTH=on`` in the base)."""
    import yaml

    wanted = {env_name(f.name) for f in dataclasses.fields(CollectorConfig) if f.name.startswith("kube_")}
    doc = yaml.safe_load((base / "collector-deployment.yaml").read_text())
    env = doc["spec"]["template"]["spec"]["containers"][0].get("env", [])
    return {e["name"]: str(e["value"]) for e in env if e["name"] in wanted and "value" in e}


def issue_operator_token(api: Client, path: Path) -> Path:
    """The lab's people identity: ServiceAccount ``cniscope/lab-operator`` bound to ``cniscope-admin``
    (both made once, kept across ``lab up``), and a 24-hour token for it written to ``path``."""
    for url, doc in (
        (f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts",
         {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": OPERATOR_SA, "namespace": NAMESPACE}}),
        ("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
         {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
          "metadata": {"name": f"cniscope-{OPERATOR_SA}"},
          "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": OPERATOR_ROLE},
          "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": NAMESPACE}]})):
        try:
            api.create(url, doc)
        except ApiError as exc:
            if exc.status != 409:   # already there from an earlier lab up
                raise
    got = api.create(f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{OPERATOR_SA}/token",
                     {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                      "spec": {"expirationSeconds": COLLECTOR_TOKEN_SECONDS}})
    write_atomic(path, got["status"]["token"])
    return path


def pod_env(tokens: Path, host: str, port: int, home: Path) -> dict[str, str]:
    """A pod's view of the API: in-cluster address, token and CA files; no kubeconfig in ``home``."""
    home.mkdir(parents=True, exist_ok=True)
    return {"CNISCOPE_KUBERNETES": "on", "KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": str(port),
            "CNISCOPE_SA_TOKEN": str(tokens / "token"), "CNISCOPE_SA_CA": str(tokens / "ca.crt"),
            "HOME": str(home)}


class LabInstall:
    """The install of one Kubernetes lab (``KubeLab``) and the environment of its lab processes."""

    def __init__(self, kube: KubeLab) -> None:
        self.kube = kube

    @property
    def marker(self) -> Path:
        return self.kube.dir / "install" / "applied"

    @property
    def applied(self) -> bool:
        return self.marker.exists()

    @property
    def people_token(self) -> Path:
        """The lab operator's token (``cniscope-admin``): what the CLI presents to the lab's collector."""
        return self.kube.dir / "install" / "operator-token"

    def agent_token(self, node: str) -> Path:
        """The token node's agent presents to the collector: its pod's projected ``cniscope-token``."""
        return projected_path(self.kube.token_root, node, NAMESPACE, AGENT_SA, AGENT_TOKEN_VOLUME, AGENT_TOKEN_PATH)

    def apply(self, timeout: float = 180.0) -> str:
        """``kubectl apply -k`` of the lab overlay; returns once every node runs a Ready probe pod and an
        agent pod whose token the stand-in wrote, and the collector's token is written. kubectl's
        output is returned (and left in ``install/apply.log``)."""
        d = write_overlay(self.kube.dir)
        out = self.kube.kubectl("apply", "-k", str(d), timeout=timeout)
        (d / "apply.log").write_text(out)
        nodes = self.kube.lab.nodes()
        admin = self.kube.client()
        try:
            wait("the install's DaemonSets on every lab node", lambda: daemonsets_ready(admin, len(nodes)), timeout)
            wait("the agents' ServiceAccount tokens",
                 lambda: ", ".join(n.name for n in nodes
                                   if not (agent_token_dir(self.kube.token_root, n.name) / "token").exists()
                                   or not self.agent_token(n.name).exists()),
                 timeout)
            issue_collector_token(admin, self.kube.token_root, self.kube.paths.ca_crt)
            issue_operator_token(admin, self.people_token)
        finally:
            admin.close()
        self.marker.write_text(out)
        return out

    def agent_env(self, node: LabNode) -> dict[str, str]:
        """A lab agent's environment: the API through the ``kubernetes`` Service's ClusterIP from its node
        namespace, its node's projected ``cniscope-agent`` token."""
        from cniscope.lab import addressing as addr

        d = agent_token_dir(self.kube.token_root, node.name)
        return {**pod_env(d, str(addr.SERVICE_NET.network_address + 1), 443, self.kube.dir / "home"),
                "CNISCOPE_TOKEN_FILE": str(self.agent_token(node.name))}

    def collector_env(self) -> dict[str, str]:
        """The lab collector's environment: the API server's address (the fabric has no kube-proxy)."""
        from cniscope.lab.kube.component_flags import API_IP, API_PORT

        return {**pod_env(collector_token_dir(self.kube.token_root), API_IP, API_PORT, self.kube.dir / "home"),
                **collector_settings()}
