"""Finding the API the way kubectl does, against local API stand-ins over real HTTP: a kubeconfig only
in $HOME, several $KUBECONFIG files merged by kubectl's rules, `--context` switching between two
clusters, and a clear error when the API server is down or nothing is configured. The CLI is run as
a user runs it (`cniscope k8s fingerprint --context …`, a subprocess with its own environment)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cniscope.agent import cluster_api
from cniscope.core import kubeapi, kubeconfig
from cniscope.core.errors import ConfigError, Unavailable
from tests.k8s.apiserver import FakeApiServer

pytestmark = pytest.mark.k8s


@pytest.fixture
def vpc() -> Iterator[FakeApiServer]:
    srv = FakeApiServer(token="token-vpc").start().load("scenario_a.json")
    yield srv
    srv.stop()


@pytest.fixture
def cilium() -> Iterator[FakeApiServer]:
    srv = FakeApiServer(token="token-cilium").start().load("scenario_e.json")
    yield srv
    srv.stop()


def config_doc(entries: dict[str, FakeApiServer], current: str | None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": n, "cluster": {"server": s.url}} for n, s in entries.items()],
        "users": [{"name": n, "user": {"token": s.token}} for n, s in entries.items()],
        "contexts": [{"name": n, "context": {"cluster": n, "user": n}} for n in entries],
    }
    if current:
        doc["current-context"] = current
    return doc


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return path


def fingerprint_cni(env: dict[str, str], context: str = "") -> str:
    view = cluster_api.ClusterView.connect("on", env, context=context)
    assert view is not None
    return view.fingerprint().cni


def test_a_kubeconfig_only_in_home_is_found(tmp_path: Path, vpc: FakeApiServer) -> None:
    write(tmp_path / ".kube" / "config", config_doc({"vpc": vpc}, "vpc"))
    env = {"HOME": str(tmp_path)}
    assert fingerprint_cni(env) == "aws-vpc-cni"
    assert vpc.requests
    assert all(r.authorization == "Bearer token-vpc" for r in vpc.requests)
    target = kubeconfig.find(env)
    assert (target.kind, target.context, target.server) == ("kubeconfig", "vpc", vpc.url)


def test_kubeconfig_paths_are_merged_like_kubectl(tmp_path: Path, vpc: FakeApiServer,
                                                  cilium: FakeApiServer) -> None:
    first = write(tmp_path / "a.yaml", config_doc({"vpc": vpc}, "vpc"))
    # the second file redefines "vpc" (ignored: the first definition wins) and sets its own
    # current-context (ignored: the first file to set one wins), and adds the "cilium" context
    second_doc = config_doc({"cilium": cilium}, "cilium")
    second_doc["clusters"].append({"name": "vpc", "cluster": {"server": "https://192.0.2.1:6443"}})
    second = write(tmp_path / "b.yaml", second_doc)
    env = {"KUBECONFIG": os.pathsep.join([str(tmp_path / "missing.yaml"), str(first), str(second)]),
           "HOME": str(tmp_path / "nohome")}
    target = kubeconfig.find(env)
    assert target.files == (str(first), str(second))       # the missing file is skipped, as kubectl does
    assert (target.context, target.server) == ("vpc", vpc.url)
    assert fingerprint_cni(env) == "aws-vpc-cni"
    assert fingerprint_cni(env, context="cilium") == "cilium"  # a context defined only in the second file


def test_the_context_flag_switches_clusters(tmp_path: Path, vpc: FakeApiServer, cilium: FakeApiServer) -> None:
    write(tmp_path / ".kube" / "config", config_doc({"vpc": vpc, "cilium": cilium}, "vpc"))
    env = {"HOME": str(tmp_path)}
    assert fingerprint_cni(env) == "aws-vpc-cni"
    vpc_calls = len(vpc.requests)
    assert fingerprint_cni(env, context="cilium") == "cilium"
    assert len(vpc.requests) == vpc_calls                     # the switch reached the other server only
    assert cilium.requests
    with pytest.raises(ConfigError, match=r"context 'eks-prod' is not in the kubeconfig \(known: vpc, cilium\)"):
        kubeconfig.find(env, context="eks-prod")


def test_relative_certificate_paths_are_relative_to_their_file(tmp_path: Path) -> None:
    doc = {"clusters": [{"name": "c", "cluster": {"server": "https://x", "certificate-authority": "ca.crt"}}],
           "users": [{"name": "u", "user": {"client-key": "/abs/key.pem", "client-certificate": "certs/me.crt",
                                            "exec": {"command": "./bin/get-token", "apiVersion": "v1"}}}],
           "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}
    merged = kubeconfig.merge([write(tmp_path / "dir" / "kc", doc)])
    base = (tmp_path / "dir").resolve()
    assert merged["clusters"][0]["cluster"]["certificate-authority"] == str(base / "ca.crt")
    user = merged["users"][0]["user"]
    assert user["client-certificate"] == str(base / "certs" / "me.crt")
    assert user["client-key"] == "/abs/key.pem"
    assert user["exec"]["command"] == str(base / "bin" / "get-token")


def test_no_current_context_asks_for_one(tmp_path: Path, vpc: FakeApiServer) -> None:
    write(tmp_path / ".kube" / "config", config_doc({"vpc": vpc}, None))
    with pytest.raises(ConfigError, match="no current-context; pass --context"):
        kubeconfig.find({"HOME": str(tmp_path)})


def test_inside_a_pod_the_service_account_is_used_and_context_is_refused(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "KUBERNETES_SERVICE_HOST": "10.100.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    target = kubeconfig.find(env)
    assert (target.kind, target.server) == ("in-cluster", "https://10.100.0.1:443")
    with pytest.raises(ConfigError, match="inside a pod only the pod's service account"):
        kubeconfig.find(env, context="other")


def test_nothing_configured_names_every_place_looked_at(tmp_path: Path) -> None:
    with pytest.raises(Unavailable, match=r"no kubeconfig at .*\.kube/config, and not inside a pod"):
        kubeapi.api_client({"HOME": str(tmp_path)})


def test_api_down_is_a_clear_error_naming_the_server(tmp_path: Path) -> None:
    srv = FakeApiServer()
    url = srv.url
    srv.httpd.server_close()                                   # nothing listens there any more
    write(tmp_path / ".kube" / "config", config_doc({"down": srv}, "down"))
    view = cluster_api.ClusterView.connect("on", {"HOME": str(tmp_path)})
    assert view is not None
    with pytest.raises(Unavailable, match=rf"API server at {url} unreachable \(connection refused\)"):
        view.fingerprint()


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {"PATH": os.environ.get("PATH", ""), **env}
    return subprocess.run([sys.executable, "-m", "cniscope.cli", *args], capture_output=True, text=True,
                          env=full, timeout=60)


def test_cli_fingerprint_with_context(tmp_path: Path, vpc: FakeApiServer, cilium: FakeApiServer) -> None:
    write(tmp_path / ".kube" / "config", config_doc({"vpc": vpc, "cilium": cilium}, "vpc"))
    out = run_cli("k8s", "fingerprint", "--context", "cilium", "-o", "json", env={"HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    fp = json.loads(out.stdout)
    assert (fp["cni"], fp["scenario"]) == ("cilium", "E")
    out = run_cli("k8s", "fingerprint", "-o", "json", env={"HOME": str(tmp_path)})
    assert json.loads(out.stdout)["cni"] == "aws-vpc-cni"


def test_cli_with_the_api_down_exits_non_zero_with_the_reason(tmp_path: Path) -> None:
    srv = FakeApiServer()
    srv.httpd.server_close()
    write(tmp_path / ".kube" / "config", config_doc({"down": srv}, "down"))
    out = run_cli("k8s", "fingerprint", env={"HOME": str(tmp_path)})
    assert out.returncode != 0
    assert "unreachable (connection refused)" in out.stderr
    assert "Traceback" not in out.stderr
