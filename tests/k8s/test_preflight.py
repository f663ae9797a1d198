"""`cniscope k8s preflight` run as a user runs it (a subprocess with a kubeconfig in $HOME) against the
API stand-in serving recorded clusters: an EKS cluster with a Fargate node that is ready for the
install, the unpublished default image, RBAC refusals (SelfSubjectAccessReview and a 403), the API
down, an old control plane, SELinux nodes. Exit 1 exactly when a check fails."""

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

from cniscope.cli import preflight_checks as pc
from tests import caps
from tests.k8s.apiserver import FakeApiServer, load_fixture

pytestmark = [pytest.mark.k8s]


@pytest.fixture(autouse=True)
def kubectl_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Preflight renders the install with `kubectl kustomize`: the setup's kubectl goes first on PATH."""
    monkeypatch.setenv("PATH", f"{Path(caps.kubectl()).parent}{os.pathsep}{os.environ['PATH']}")

ROOT = Path(__file__).resolve().parents[2]
NODES = "/api/v1/nodes"


@pytest.fixture
def eks() -> Iterator[FakeApiServer]:
    srv = FakeApiServer().start().load("cluster_eks_172_20.json").load("scenario_a.json")
    yield srv
    srv.stop()


def overlay(tmp_path: Path, image: str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/cniscope") -> Path:
    d = tmp_path / "my-cniscope"
    d.mkdir()
    (d / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [os.path.relpath(ROOT / "daemonset" / "base", d)],
        "images": [{"name": "ghcr.io/cniscope/cniscope", "newName": image, "newTag": "0.1.0"}]}))
    return d


def preflight(api: FakeApiServer, tmp_path: Path, manifests: Path) -> tuple[int, dict[str, Any]]:
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True, exist_ok=True)
    api.kubeconfig(home / ".kube" / "config")
    out = subprocess.run([sys.executable, "-m", "cniscope.cli", "k8s", "preflight", "--manifests", str(manifests),
                          "-o", "json"], capture_output=True, text=True, timeout=120,
                         env={"HOME": str(home), "PATH": os.environ.get("PATH", "")})
    assert "Traceback" not in out.stderr, out.stderr
    return out.returncode, json.loads(out.stdout)


def by_name(report: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in report["checks"]}


def test_an_eks_cluster_with_a_fargate_node_is_ready(eks: FakeApiServer, tmp_path: Path) -> None:
    rc, report = preflight(eks, tmp_path, overlay(tmp_path))
    checks = by_name(report)
    assert rc == 0, report
    assert report["ok"] is True
    assert checks["api"]["status"] == "pass"
    assert "v1.31.4-eks" in checks["api"]["message"]
    assert checks["rbac"]["status"] == "pass"
    assert checks["nodes"]["status"] == "pass"
    assert "2 Linux node(s)" in checks["nodes"]["message"]                 # the Fargate node is not one
    assert checks["serverless-nodes"]["status"] == "warn"
    assert "fargate-ip-10-0-77-8" in checks["serverless-nodes"]["message"]
    assert checks["data-plane"]["message"].startswith("CNI aws-vpc-cni 1.19.0, kube-proxy iptables")
    assert checks["service-cidr"]["status"] == "pass"
    assert checks["service-cidr"]["message"].startswith("172.20.0.0/16")
    assert checks["image"]["message"] == "123456789012.dkr.ecr.eu-west-1.amazonaws.com/cniscope:0.1.0"
    asked = [r for r in eks.requests if r.path.endswith("/selfsubjectaccessreviews")]
    assert len(asked) >= 10                                               # one per kind and namespace installed


def test_the_unpublished_default_image_fails(eks: FakeApiServer, tmp_path: Path) -> None:
    rc, report = preflight(eks, tmp_path, ROOT / "daemonset" / "base")
    image = by_name(report)["image"]
    assert rc == 1
    assert image["status"] == "fail"
    assert "make image" in image["fix"]


def test_missing_rights_for_the_install_fail_and_are_named(eks: FakeApiServer, tmp_path: Path) -> None:
    eks.denied_access |= {("create", "rbac.authorization.k8s.io", "clusterroles", ""),
                          ("create", "admissionregistration.k8s.io", "validatingadmissionpolicies", "")}
    rc, report = preflight(eks, tmp_path, overlay(tmp_path))
    rbac = by_name(report)["rbac"]
    assert rc == 1
    assert rbac["status"] == "fail"
    assert "create rbac.authorization.k8s.io/clusterroles" in rbac["message"]
    assert "create admissionregistration.k8s.io/validatingadmissionpolicies" in rbac["message"]
    assert "daemonsets" not in rbac["message"]


def test_a_403_on_nodes_fails_the_node_checks(eks: FakeApiServer, tmp_path: Path) -> None:
    eks.forbidden.add(NODES)
    rc, report = preflight(eks, tmp_path, overlay(tmp_path))
    nodes = by_name(report)["nodes"]
    assert rc == 1
    assert nodes["status"] == "fail"
    assert "403" in nodes["message"]


def test_the_api_down_fails_and_skips_what_needs_it(tmp_path: Path) -> None:
    srv = FakeApiServer()
    srv.httpd.server_close()
    rc, report = preflight(srv, tmp_path, overlay(tmp_path))
    assert rc == 1
    assert [c["name"] for c in report["checks"]] == ["api", "image"]
    assert report["checks"][0]["status"] == "fail"
    assert "connection refused" in report["checks"][0]["message"]


def test_an_old_control_plane_fails(eks: FakeApiServer, tmp_path: Path) -> None:
    eks.objects["/version"].update(minor="29+", gitVersion="v1.29.10-eks-1")
    rc, report = preflight(eks, tmp_path, overlay(tmp_path))
    assert rc == 1
    assert by_name(report)["api"]["status"] == "fail"
    assert "1.30+" in by_name(report)["api"]["message"]


def test_selinux_nodes_point_at_the_overlay(eks: FakeApiServer, tmp_path: Path) -> None:
    for n in eks.objects[NODES]["items"]:
        n["status"]["nodeInfo"]["osImage"] = "Bottlerocket OS 1.29.0 (aws-k8s-1.31)"
    rc, report = preflight(eks, tmp_path, overlay(tmp_path))
    lsm = by_name(report)["apparmor-selinux"]
    assert rc == 0
    assert lsm["status"] == "warn"
    assert "overlays/selinux" in lsm["fix"]


def test_node_architectures_and_kernels() -> None:
    node = load_fixture("node_m6i.json")["object"]
    g = pc.Gathered(nodes=[node])
    assert pc.check_nodes(g)[0].status == "pass"
    node["status"]["nodeInfo"]["kernelVersion"] = "5.4.285-196.735.amzn2.x86_64"
    assert pc.check_nodes(g)[0].status == "warn"
    assert "overlays/minimal" in pc.check_nodes(g)[0].fix
    node["status"]["nodeInfo"]["architecture"] = "s390x"
    assert pc.check_nodes(g)[0].status == "fail"
    fargate = load_fixture("node_fargate.json")["object"]
    assert pc.check_nodes(pc.Gathered(nodes=[fargate]))[0].status == "fail"   # only serverless nodes: nowhere to run


def test_the_text_output_and_exit_code(eks: FakeApiServer, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    eks.kubeconfig(home / ".kube" / "config")
    out = subprocess.run([sys.executable, "-m", "cniscope.cli", "k8s", "preflight", "--manifests",
                          str(ROOT / "daemonset" / "base")], capture_output=True, text=True, timeout=120,
                         env={"HOME": str(home), "PATH": os.environ.get("PATH", "")})
    assert out.returncode == 1
    assert "FAIL  image" in out.stdout
    assert "fix: make image" in out.stdout
    assert out.stdout.rstrip().splitlines()[-1].startswith("1 fail,")
