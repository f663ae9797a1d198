"""Kubernetes identities against a real API server (issue 13): a collector with CNISCOPE_KUBE_AUTH=on
checks every token with TokenReview and every person's verb with SubjectAccessReview.

The lab's control plane (etcd, kube-apiserver 1.31, controller manager) issues the tokens through
the TokenRequest API as a kubelet would: an agent's, bound to a pod on node1 with the audience
``cniscope``; the same account's without that audience; people's ServiceAccount tokens, one bound to
the shipped ClusterRole cniscope-probe and one bound to nothing. The collector runs in the lab's
fabric namespace (where the API server listens) on a unix socket the test reaches from outside."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from cniscope.api.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2, runs_pb2, runs_pb2_grpc
from cniscope.core import grpcutil, security
from cniscope.lab import netns
from cniscope.lab.kube.control_plane import KubeLab
from cniscope.lab.lab import Lab, LabSpec
from tests.conftest import new_lab_name
from tests.k8s import kube_lab_kit as kit

sys.path.insert(0, str(Path(__file__).parents[1]))
import hostile_kit as hk  # type: ignore[import-not-found]  # noqa: E402

pytestmark = [pytest.mark.k8s, pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
SA = "/api/v1/namespaces/{ns}/serviceaccounts"


def _token(api: Any, ns: str, account: str, audiences: list[str] | None = None,
           pod: dict[str, Any] | None = None) -> str:
    spec: dict[str, Any] = {"expirationSeconds": 600}
    if audiences:
        spec["audiences"] = audiences
    if pod is not None:
        spec["boundObjectRef"] = {"kind": "Pod", "apiVersion": "v1", "name": pod["metadata"]["name"],
                                  "uid": pod["metadata"]["uid"]}
    got = api.create(f"{SA.format(ns=ns)}/{account}/token", {"apiVersion": "authentication.k8s.io/v1",
                                                               "kind": "TokenRequest", "spec": spec})
    return str(got["status"]["token"])


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KubeLab, dict[str, Any]]]:
    binary = kit.harness_binary()
    lab = Lab(LabSpec(name=new_lab_name(), nodes=1, pods_per_node=1), state_root=tmp_path_factory.mktemp("kid"))
    try:
        lab.up()
        k = KubeLab(lab)
        k.up(binary=binary)
        api = k.client()
        for ns in ("cniscope", "people"):
            api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        for ns, account in (("cniscope", "cniscope-agent"), ("people", "alice"), ("people", "bob")):
            api.create(SA.format(ns=ns), {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}})
        for doc in yaml.safe_load_all((ROOT / "daemonset" / "base" / "rbac-people.yaml").read_text()):
            api.create("/apis/rbac.authorization.k8s.io/v1/clusterroles", doc)
        api.create("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "alice-cniscope"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cniscope-probe"},
            "subjects": [{"kind": "ServiceAccount", "name": "alice", "namespace": "people"}]})
        pod = api.create("/api/v1/namespaces/cniscope/pods", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "cniscope-agent-node1"},
            "spec": {"nodeName": "node1", "serviceAccountName": "cniscope-agent", "automountServiceAccountToken": False,
                     "containers": [{"name": "agent", "image": "cniscope-lab-placeholder"}]}})
        tokens = {
            "agent": _token(api, "cniscope", "cniscope-agent", ["cniscope"], pod),
            "agent, API audience": _token(api, "cniscope", "cniscope-agent", None, pod),
            "agent, no pod": _token(api, "cniscope", "cniscope-agent", ["cniscope"]),
            "alice": _token(api, "people", "alice"),
            "bob": _token(api, "people", "bob"),
        }
        api.close()
        yield k, tokens
    finally:
        lab.down()


def _collector(k: KubeLab, sock: Path, server: str | None = None) -> subprocess.Popen[bytes]:
    kubeconfig = k.admin_kubeconfig
    if server is not None:  # the same credentials against an API server that is not there
        doc = yaml.safe_load(kubeconfig.read_text())
        doc["clusters"][0]["cluster"]["server"] = server
        kubeconfig = sock.with_suffix(".kubeconfig")
        kubeconfig.write_text(yaml.safe_dump(doc))
    env = {**os.environ, "CNISCOPE_KUBE_AUTH": "on", "KUBECONFIG": str(kubeconfig), "CNISCOPE_LOG_LEVEL": "warning"}
    argv = [sys.executable, "-m", "cniscope.cli", "collector", "--listen", f"unix://{sock}",
            "--db", str(sock.with_suffix(".db"))]
    log = sock.with_suffix(".log").open("wb")   # the collector's own account, for a failure's message
    proc = subprocess.Popen(netns.nsenter_argv(k.lab.fabric, argv), env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    kit.wait_for("the collector's socket", lambda: sock.exists(), timeout=60)
    return proc


async def _call(sock: Path, token: str, what: str) -> grpc.StatusCode | str:
    md = security.bearer_metadata(token)
    async with grpcutil.insecure_channel(f"unix://{sock}") as ch:
        stub, runs = cluster_pb2_grpc.ClusterStub(ch), runs_pb2_grpc.RunsStub(ch)
        try:
            if what == "view":
                await stub.ListNodes(cluster_pb2.ListNodesRequest(), metadata=md, timeout=20)
            elif what == "probe":
                async for _ in stub.RunProbe(common_pb2.ProbeRequest(kind="rtt", source_node="nowhere",
                                                                     target_node="x"), metadata=md, timeout=20):
                    pass
            else:
                await runs.DeleteRun(runs_pb2.RunRef(run_id="r1"), metadata=md, timeout=20)
        except grpc.aio.AioRpcError as exc:
            return exc.code() if exc.code() != grpc.StatusCode.UNAUTHENTICATED else f"UNAUTHENTICATED {exc.details()}"
    return grpc.StatusCode.OK


async def _connect(sock: Path, token: str, node: str) -> tuple[grpc.StatusCode | str, str]:
    # the Hello waits for the collector's admission, so a refusal's status is the one the client reads
    a = await hk.FakeAgent(f"unix://{sock}", security.bearer_metadata(token),
                           after_admission=True).start(hk.hello(node, f"b-{node}", "k"))
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if a.welcomed():
                return "welcomed", ""
            if a.ended is not None and a.ended.done():
                code, details = a.ended.result()
                return code, details
            await asyncio.sleep(0.05)
        return "no answer", ""
    finally:
        await a.close()


def test_agents_and_people_are_who_the_api_server_says(kube: tuple[KubeLab, dict[str, Any]], tmp_path: Path) -> None:
    k, tokens = kube
    sock = tmp_path / "c.sock"
    proc = _collector(k, sock)
    try:
        # the agent's token: it speaks for node1, the node its pod is bound to, and for nothing else
        assert asyncio.run(_connect(sock, tokens["agent"], "node1"))[0] == "welcomed"
        code, details = asyncio.run(_connect(sock, tokens["agent"], "node2"))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "speaks for node 'node1' only, not 'node2'" in details
        assert asyncio.run(_call(sock, tokens["agent"], "view")) == grpc.StatusCode.PERMISSION_DENIED
        # the wrong audience, no pod, not a token at all
        code, details = asyncio.run(_connect(sock, tokens["agent, API audience"], "node1"))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert "not for the audience 'cniscope'" in details
        code, details = asyncio.run(_connect(sock, tokens["agent, no pod"], "node1"))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert "bound to no pod on a node" in details
        forged = tokens["alice"][:-8] + "AAAAAAAA"
        got = asyncio.run(_call(sock, forged, "view"))
        assert isinstance(got, str)
        assert got.startswith("UNAUTHENTICATED Kubernetes token not accepted")
        # people: alice is bound to cniscope-probe; bob to nothing
        assert asyncio.run(_call(sock, tokens["alice"], "view")) == grpc.StatusCode.OK
        assert asyncio.run(_call(sock, tokens["alice"], "probe")) == grpc.StatusCode.NOT_FOUND  # admitted
        assert asyncio.run(_call(sock, tokens["alice"], "admin")) == grpc.StatusCode.PERMISSION_DENIED
        code, details = asyncio.run(_connect(sock, tokens["alice"], "node1"))
        assert code == grpc.StatusCode.PERMISSION_DENIED, details
        assert asyncio.run(_call(sock, tokens["bob"], "view")) == grpc.StatusCode.PERMISSION_DENIED
    finally:
        proc.terminate()
        proc.wait(20)


def _resigned(token: str, key_file: Path, expires_in: int) -> str:
    """``token``'s own header and claims, with its lifetime moved so that it ends ``expires_in`` seconds
    from now, signed again (ES256) with the lab API server's ServiceAccount signing key."""
    import base64
    import json

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, utils

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header, payload, _ = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    now = int(time.time())
    issued = min(now - 60, now + expires_in - 1200)       # issued in the past, 20 minutes before expiry at most
    claims.update(iat=issued, nbf=issued, exp=now + expires_in)
    signing_input = f"{header}.{b64(json.dumps(claims, separators=(',', ':')).encode())}"
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    r, s_ = utils.decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{b64(r.to_bytes(32, 'big') + s_.to_bytes(32, 'big'))}"


def test_an_expired_token_is_refused(kube: tuple[KubeLab, dict[str, Any]], tmp_path: Path) -> None:
    """The agent's own token with its lifetime ended an hour ago, signed with the API server's key, is
    refused; the same claims ending an hour from now are admitted, so expiry is all that differs."""
    k, tokens = kube
    sock = tmp_path / "exp.sock"
    proc = _collector(k, sock)
    try:
        alive = _resigned(tokens["agent"], k.paths.sa_key, 3600)
        got = asyncio.run(_connect(sock, alive, "node1"))
        assert got[0] == "welcomed", got
        expired = _resigned(tokens["agent"], k.paths.sa_key, -3600)
        code, details = asyncio.run(_connect(sock, expired, "node1"))
        assert code == grpc.StatusCode.UNAUTHENTICATED, details
        assert "not accepted" in details, details
    finally:
        proc.terminate()
        proc.wait(20)


def test_the_api_server_down_fails_closed(kube: tuple[KubeLab, dict[str, Any]], tmp_path: Path) -> None:
    k, tokens = kube
    sock = tmp_path / "down.sock"
    proc = _collector(k, sock, server="https://127.0.0.1:1")
    try:
        got = asyncio.run(_call(sock, tokens["alice"], "view"))
        assert isinstance(got, str)
        assert got.startswith("UNAUTHENTICATED cannot verify the Kubernetes token")
        assert "unreachable" in got
        code, details = asyncio.run(_connect(sock, tokens["agent"], "node1"))
        assert code == grpc.StatusCode.UNAUTHENTICATED
    finally:
        proc.terminate()
        proc.wait(20)
