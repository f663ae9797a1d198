"""The install path a new user follows: `make image` builds the Dockerfile for amd64 and arm64 tagged
with the package version, the README's own-registry overlay points every container at that image, and
the repository's kustomize renderer (tests/kustomize.py, used by the manifest tests) sends exactly
what `kubectl kustomize` sends for every overlay."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import caps
from tests.kustomize import Doc, image_name, render

ROOT = Path(__file__).resolve().parents[2]
DS = ROOT / "daemonset"
OVERLAYS = ["base", "overlays/persistent", "overlays/minimal", "overlays/auth"]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def make_dry_run(*args: str) -> str:
    out = subprocess.run(["make", "-n", "-C", str(ROOT), "image", *args], capture_output=True, text=True,
                         check=True)
    return out.stdout


def buildx_line(text: str) -> list[str]:
    joined = text.replace("\\\n", " ")
    line = next(ln for ln in joined.splitlines() if "docker buildx build" in ln)
    return line.split()


def containers(docs: list[Doc]) -> list[dict[str, Any]]:
    out = []
    for d in docs:
        spec = d.get("spec", {}).get("template", {}).get("spec")
        if spec:
            out += [*spec.get("initContainers", []), *spec["containers"]]
    return out


def kubectl_kustomize(directory: Path) -> list[Doc]:
    out = subprocess.run([caps.kubectl(), "kustomize", str(directory)], capture_output=True, text=True, check=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def keyed(docs: list[Doc]) -> dict[tuple[str, str, str], Doc]:
    return {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d for d in docs}


def test_make_image_builds_both_architectures_tagged_with_the_package_version() -> None:
    words = buildx_line(make_dry_run("IMAGE=registry.example.com/team/cniscope"))
    assert words[words.index("--platform") + 1] == "linux/amd64,linux/arm64"
    assert words[words.index("-t") + 1] == f"registry.example.com/team/cniscope:{VERSION}"
    assert words[words.index("-f") + 1] == "daemonset/Dockerfile"
    assert f"VERSION={VERSION}" in words
    assert "--push" in words
    assert words[-1] == "."                      # the repository root is the build context


def test_make_image_without_push_loads_this_machines_platform_only() -> None:
    words = buildx_line(make_dry_run("IMAGE=localhost:5000/cniscope", "PUSH=0"))
    assert "--load" in words
    assert "--push" not in words
    assert "--platform" not in words             # a multi-platform result cannot be loaded locally
    assert words[words.index("-t") + 1] == f"localhost:5000/cniscope:{VERSION}"


def test_the_base_kustomization_names_the_package_version() -> None:
    for c in containers(render(DS / "base")):
        assert c["image"] == f"ghcr.io/cniscope/cniscope:{VERSION}"


def readme_overlay_snippet() -> str:
    readme = (ROOT / "README.md").read_text().split("## Kubernetes", 1)[1]
    m = re.search(r"```sh\n(mkdir -p my-cniscope.*?)```", readme, re.DOTALL)
    assert m, "README's Kubernetes section has no own-registry overlay command"
    return m.group(1)


@pytest.mark.parametrize("registry", ["123456789012.dkr.ecr.eu-west-1.amazonaws.com", "localhost:5000/team"])
def test_the_readme_overlay_points_every_container_at_your_registry(tmp_path: Path, registry: str) -> None:
    (tmp_path / "daemonset").symlink_to(DS)       # the README's overlay sits next to the checkout
    subprocess.run(["bash", "-euc", readme_overlay_snippet()], cwd=tmp_path, check=True,
                   env={"REGISTRY": registry, "PATH": "/usr/bin:/bin"})
    overlay = tmp_path / "my-cniscope"
    want = f"{registry}/cniscope:{VERSION}"
    mine = containers(render(overlay))
    assert len(mine) == 3
    assert {c["image"] for c in mine} == {want}
    assert {c["image"] for c in containers(kubectl_kustomize(overlay))} == {want}


def test_image_names_are_matched_without_tag_digest_or_confusing_a_port_for_a_tag() -> None:
    assert image_name("cniscope") == "cniscope"
    assert image_name("ghcr.io/cniscope/cniscope:0.1.0") == "ghcr.io/cniscope/cniscope"
    assert image_name("localhost:5000/cniscope") == "localhost:5000/cniscope"
    assert image_name("localhost:5000/cniscope:0.1.0@sha256:" + "a" * 64) == "localhost:5000/cniscope"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_repo_renderer_agrees_with_kubectl_kustomize(overlay: str) -> None:
    ours, theirs = keyed(render(DS / overlay)), keyed(kubectl_kustomize(DS / overlay))
    assert set(ours) == set(theirs)
    for key, doc in theirs.items():
        assert ours[key] == doc, f"{overlay}: {key} differs"
