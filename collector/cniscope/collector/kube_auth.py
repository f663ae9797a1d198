"""Kubernetes identities: ServiceAccount tokens checked with TokenReview, verbs with SubjectAccessReview.

- **Agents** present a projected ServiceAccount token with the audience ``cniscope``
  (``CNISCOPE_KUBE_AUDIENCE``) of the agent's ServiceAccount (``CNISCOPE_KUBE_AGENT_ACCOUNT``). The
  stream is bound to the node the token names: the ``authentication.kubernetes.io/node-name`` claim
  (Kubernetes 1.30+), else the node of the pod it is bound to (``.../pod-name`` and ``pod-uid``, looked
  up). A token bound to no pod speaks for no node, and is refused.
- **People and scripts** present a token the API server accepts for itself (``kubectl create token``,
  their kubeconfig's); each verb (view, probe, run, admin) is a SubjectAccessReview of that verb on
  ``collectors.cniscope.io``, which the shipped ClusterRoles cniscope-view / -probe / -run / -admin grant.

Answers are cached per token for ``CACHE_SECONDS`` (a token revoked meanwhile — its pod deleted —
is refused once that passes); a refusal for a short while too, so a caller cannot make every call a
TokenReview. The API server unreachable or
refusing the review fails closed: the caller is not admitted, and is told why.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from cniscope.collector.principals import CLIENT_VERBS, CONNECT, Principal
from cniscope.core.errors import CniscopeError

NODE_CLAIM = "authentication.kubernetes.io/node-name"
POD_CLAIM, POD_UID_CLAIM = "authentication.kubernetes.io/pod-name", "authentication.kubernetes.io/pod-uid"
API_GROUP, RESOURCE = "cniscope.io", "collectors"
CACHE_SECONDS = 30.0
REFUSAL_SECONDS = 5.0
CACHE_ENTRIES = 4096

Review = Callable[[str, list[str]], dict[str, Any]]          # (token, audiences) -> TokenReview status
Access = Callable[[dict[str, Any], str], bool]              # (user info, verb) -> allowed
PodNode = Callable[[str, str, str], str]                    # (namespace, pod, uid) -> node name ("" unknown)


class KubeVerifier:
    """Blocking API calls (``review``, ``access``, ``pod_node``) run in threads."""

    def __init__(self, review: Review, access: Access, pod_node: PodNode, *, audience: str = "cniscope",
                 agent_account: str = "system:serviceaccount:cniscope:cniscope-agent",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.review, self.access, self.pod_node = review, access, pod_node
        self.audience = audience
        self.agent_account = agent_account
        self.clock = clock
        self._cache: OrderedDict[bytes, tuple[float, Principal | str]] = OrderedDict()

    async def principal(self, token: str) -> Principal | str:
        key = hashlib.sha256(token.encode()).digest()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > self.clock():
            return hit[1]
        try:
            got, ttl = await asyncio.to_thread(self._verify, token)
        except CniscopeError as exc:  # fail closed, and say why
            got, ttl = f"cannot verify the Kubernetes token: {exc}", REFUSAL_SECONDS
        self._cache[key] = (self.clock() + ttl, got)
        self._cache.move_to_end(key)
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return got

    def _verify(self, token: str) -> tuple[Principal | str, float]:
        status = self.review(token, [self.audience])
        user = status.get("user") or {}
        if status.get("authenticated") and user.get("username") == self.agent_account:
            return self._agent(user), CACHE_SECONDS
        status = self.review(token, [])  # the API server's own audience: a person's or a script's token
        user = status.get("user") or {}
        if not status.get("authenticated"):
            return f"Kubernetes token not accepted: {status.get('error') or 'not authenticated'}", REFUSAL_SECONDS
        name = str(user.get("username", ""))
        if name == self.agent_account:
            return (f"the agent's ServiceAccount token is not for the audience {self.audience!r}: project one "
                    f"with that audience (serviceAccountToken.audience)"), REFUSAL_SECONDS
        verbs = frozenset(v for v in CLIENT_VERBS if self.access(user, v))
        return Principal(name, verbs, via="kubernetes"), CACHE_SECONDS

    def _agent(self, user: dict[str, Any]) -> Principal | str:
        extra = user.get("extra") or {}
        node = (extra.get(NODE_CLAIM) or [""])[0]
        if not node:
            pod, uid = (extra.get(POD_CLAIM) or [""])[0], (extra.get(POD_UID_CLAIM) or [""])[0]
            namespace = str(user.get("username", "")).split(":")[2] if pod else ""
            node = self.pod_node(namespace, pod, uid) if pod else ""
        if not node:
            return "the agent's ServiceAccount token is bound to no pod on a node: it speaks for no node"
        return Principal(f"agent of node {node} (ServiceAccount token)", frozenset({CONNECT}), node=node,
                         via="kubernetes")


def kubernetes_verifier(audience: str, agent_account: str, env: dict[str, str] | None = None) -> KubeVerifier:
    """A verifier that reviews through the collector's own API credentials (RBAC: create tokenreviews
    and subjectaccessreviews; get pods in the agent's namespace)."""
    from cniscope.core import kubeapi

    api: dict[str, Any] = {}

    def apis() -> dict[str, Any]:
        if not api:
            conn = kubeapi.api_client(env)
            from kubernetes import client

            api.update(authn=client.AuthenticationV1Api(conn), authz=client.AuthorizationV1Api(conn),
                       core=client.CoreV1Api(conn))
        return api

    def review(token: str, audiences: list[str]) -> dict[str, Any]:
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {"token": token, **({"audiences": audiences} if audiences else {})}}
        got = kubeapi.call(apis()["authn"].create_token_review, body, what="TokenReview")
        if got is None:
            raise CniscopeError("the API server does not serve TokenReview")
        return dict(got.get("status") or {})

    def access(user: dict[str, Any], verb: str) -> bool:
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {
            "user": user.get("username", ""), "uid": user.get("uid", ""), "groups": user.get("groups", []),
            "extra": user.get("extra", {}),
            "resourceAttributes": {"group": API_GROUP, "resource": RESOURCE, "verb": verb}}}
        got = kubeapi.call(apis()["authz"].create_subject_access_review, body, what="SubjectAccessReview")
        return bool(got and (got.get("status") or {}).get("allowed"))

    def pod_node(namespace: str, pod: str, uid: str) -> str:
        got = kubeapi.call(apis()["core"].read_namespaced_pod, pod, namespace, what=f"get pod {namespace}/{pod}")
        if not got or got.get("metadata", {}).get("uid") != uid:
            return ""
        return str(got.get("spec", {}).get("nodeName", ""))

    return KubeVerifier(review, access, pod_node, audience=audience, agent_account=agent_account)
