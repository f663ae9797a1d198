"""ServiceAccount tokens for the lab's pods, as a kubelet projects them.

For every pod bound to a lab node that uses a ServiceAccount (``automountServiceAccountToken`` not
false), the kubelet stand-in asks the TokenRequest API — with that node's own ``system:node:<name>``
identity, so the Node authorizer and NodeRestriction allow it only for a pod bound to the node — for
a token bound to the pod (``boundObjectRef``), and writes it where that node's lab process reads it:

    <kube dir>/serviceaccounts/<node>/<namespace>/<serviceaccount>/{token,ca.crt,namespace}

(files 0600, replaced atomically) — the lab's ``/var/run/secrets/kubernetes.io/serviceaccount``.
A ``projected`` volume's ``serviceAccountToken`` sources (their own ``audience`` and
``expirationSeconds``) are requested the same way and written to

    <token dir>/volumes/<volume name>/<path>

A token is renewed when 80 % of its lifetime has passed, as the kubelet does; a deleted pod's token
stops working at once (the API server checks the bound pod), its replacement's is written in place.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cniscope.lab.kube.apiclient import ApiError, Client, name_path

EXPIRATION = 3607          # the kubelet's own request (the API server may extend it)
RENEW_AT = 0.8
RETRY = 10.0


def token_dir(root: Path, node: str, namespace: str, service_account: str) -> Path:
    return root / node / namespace / service_account


def write_atomic(path: Path, data: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(data)
    os.replace(tmp, path)


def uses_token(pod: Mapping[str, Any]) -> bool:
    spec = pod.get("spec", {})
    return spec.get("automountServiceAccountToken") is not False and bool(spec.get("serviceAccountName"))


def projected_sources(pod: Mapping[str, Any]) -> list[tuple[str, str, str, int]]:
    """(volume, path, audience, expirationSeconds) of every ``serviceAccountToken`` source of the pod's
    ``projected`` volumes (audience "" is the API server's own)."""
    out = []
    for vol in pod.get("spec", {}).get("volumes") or []:
        for src in (vol.get("projected") or {}).get("sources") or []:
            sat = src.get("serviceAccountToken")
            if isinstance(sat, dict) and sat.get("path"):
                out.append((str(vol["name"]), str(sat["path"]), str(sat.get("audience", "")),
                            int(sat.get("expirationSeconds", 3600))))
    return out


def projected_path(root: Path, node: str, namespace: str, service_account: str, volume: str, path: str) -> Path:
    return token_dir(root, node, namespace, service_account) / "volumes" / volume / path


class TokenProjector:
    """One node's projected tokens; ``sync`` from the stand-in's loop."""

    def __init__(self, api: Client, node: str, root: Path, ca: Path) -> None:
        self.api, self.node, self.root, self.ca = api, node, root, ca
        self.renew: dict[str, tuple[str, float]] = {}   # token dir -> (pod uid, monotonic renewal time)

    def sync(self, pods: list[Mapping[str, Any]]) -> None:
        for pod in pods:
            if pod["metadata"].get("deletionTimestamp") or not pod.get("spec", {}).get("serviceAccountName"):
                continue
            if not uses_token(pod) and not projected_sources(pod):
                continue
            md = pod["metadata"]
            d = token_dir(self.root, self.node, md["namespace"], pod["spec"]["serviceAccountName"])
            uid, due = self.renew.get(str(d), ("", 0.0))
            if uid == md["uid"] and time.monotonic() < due:
                continue
            try:
                self.project(pod, d)
            except ApiError as exc:   # said once per retry, not every poll
                print(f"token for {md['namespace']}/{pod['spec']['serviceAccountName']}: {exc}", flush=True)
                self.renew[str(d)] = (md["uid"], time.monotonic() + RETRY)

    def _request(self, pod: Mapping[str, Any], seconds: int, audience: str = "") -> str:
        md = pod["metadata"]
        spec: dict[str, Any] = {"expirationSeconds": seconds,
                                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": md["name"],
                                                   "uid": md["uid"]}}
        if audience:
            spec["audiences"] = [audience]
        got = self.api.create(
            f"/api/v1/namespaces/{name_path(md['namespace'])}/serviceaccounts/"
            f"{name_path(pod['spec']['serviceAccountName'])}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
        return str(got["status"]["token"])

    def project(self, pod: Mapping[str, Any], d: Path) -> None:
        md = pod["metadata"]
        sa = pod["spec"]["serviceAccountName"]
        renew = float(EXPIRATION)
        if uses_token(pod):
            token = self._request(pod, EXPIRATION)
            write_atomic(d / "ca.crt", self.ca.read_text())
            write_atomic(d / "namespace", md["namespace"])
            write_atomic(d / "token", token)
        for volume, path, audience, seconds in projected_sources(pod):
            out = projected_path(self.root, self.node, md["namespace"], sa, volume, path)
            write_atomic(out, self._request(pod, seconds, audience))
            renew = min(renew, float(seconds))
        self.renew[str(d)] = (md["uid"], time.monotonic() + RENEW_AT * renew)
        print(f"token(s) for {md['namespace']}/{sa} bound to pod {md['name']} written to {d}", flush=True)
