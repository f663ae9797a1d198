"""The image build file, parsed with the official Dockerfile parser (the `dockerfile` package wraps
moby/buildkit's): base image pinned by version and by the digest of its multi-arch index, every
Debian package it installs is one the host setup (Makefile → scripts/host-setup.sh) installs too, the
tools the agent runs are in the final stage, every Python distribution (the build backend included)
comes from the pinned lock, it builds the same package the README installs, runs non-root by
default, and its entrypoint is the `cniscope` command.

There is no Docker engine where these tests run, so the build itself is checked statically here;
`make image` runs it where buildx is available."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import dockerfile
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = {"python3-bpfcc", "iperf3", "iputils-ping", "iptables", "nftables", "ethtool"}


def host_setup_packages() -> set[str]:
    text = (ROOT / "scripts" / "host-setup.sh").read_text()
    m = re.search(r'^PKGS="([^"]*)"', text, re.MULTILINE | re.DOTALL)
    assert m, "PKGS not found in scripts/host-setup.sh"
    return set(m.group(1).replace("\\\n", " ").split())


def stages(path: Path = ROOT / "daemonset" / "Dockerfile") -> list[list[dockerfile.Command]]:
    out: list[list[dockerfile.Command]] = []
    for cmd in dockerfile.parse_file(str(path)):
        if cmd.cmd == "FROM":
            out.append([])
        out[-1].append(cmd)
    return out


def apt_packages(stage: list[dockerfile.Command]) -> set[str]:
    pkgs: set[str] = set()
    for cmd in stage:
        if cmd.cmd != "RUN":
            continue
        for part in re.split(r"&&|;", " ".join(cmd.value)):
            words = shlex.split(part.replace("\\\n", " "))
            if words[:2] == ["apt-get", "install"]:
                pkgs |= {w for w in words[2:] if not w.startswith("-")}
    return pkgs


def test_base_images_are_pinned_by_version_and_digest() -> None:
    images = {stage[0].value[0] for stage in stages()}
    assert len(images) == 1, f"the stages use different bases: {images}"
    image = images.pop()
    m = re.fullmatch(r"debian:(\d+\.\d+-slim)@sha256:([0-9a-f]{64})", image)
    assert m, f"{image} is not pinned by point release and digest"


def env_of(stage: list[dockerfile.Command]) -> dict[str, str]:
    out: dict[str, str] = {}
    for cmd in stage:
        if cmd.cmd == "ENV":
            vals = list(cmd.value)
            out.update(zip(vals[::2], vals[1::2], strict=True))
    return out


def lock_pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "daemonset" / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"{line!r} is not an exact pin"
            pins[canonicalize_name(name)] = version
    return pins


def test_python_dependencies_and_the_build_backend_come_from_the_lock() -> None:
    build = stages()[0]
    env = env_of(build)
    assert env["PIP_CONSTRAINT"] == "/src/daemonset/requirements.lock"   # also reaches the isolated build
    assert env["PIP_ONLY_BINARY"] == ":all:"                              # no compiler, same wheels per arch
    copies = [" ".join(c.value) for c in build if c.cmd == "COPY"]
    assert "daemonset/requirements.lock ./daemonset/" in copies
    pins = lock_pins()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = [*project["project"]["dependencies"], *project["project"]["optional-dependencies"]["k8s"],
              *project["build-system"]["requires"]]
    for spec in wanted:
        req = Requirement(spec)
        pin = pins.get(canonicalize_name(req.name))
        assert pin is not None, f"{req.name} is not pinned"
        assert req.specifier.contains(pin, prereleases=True), f"{req.name}=={pin} breaks {spec!r}"


def test_the_lock_matches_what_the_tests_run_against() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "image_lock.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_the_build_context_admits_exactly_what_the_dockerfile_copies() -> None:
    ignore = (ROOT / "daemonset" / "Dockerfile.dockerignore").read_text().splitlines()
    admitted = {ln[1:] for ln in ignore if ln.startswith("!")}
    assert "*" in ignore
    sources = set()
    for c in stages()[0]:
        if c.cmd == "COPY" and not any(f.startswith("--from") for f in c.flags):
            sources |= set(c.value[:-1])
    for src in sources:
        assert any(src == a or a.startswith(src.rstrip("/") + "/") for a in admitted), f"{src} is ignored"


def test_packages_match_the_host_setup_list() -> None:
    host = host_setup_packages()
    all_pkgs = set().union(*(apt_packages(s) for s in stages()))
    assert all_pkgs, "no apt-get install found"
    assert all_pkgs <= host, f"installed in the image but not by the host setup: {sorted(all_pkgs - host)}"
    final = apt_packages(stages()[-1])
    assert final >= RUNTIME, f"missing at run time: {sorted(RUNTIME - final)}"


def test_builds_the_same_package_and_runs_cniscope() -> None:
    cmds = [c for s in stages() for c in s]
    runs = " ".join(" ".join(c.value) for c in cmds if c.cmd == "RUN")
    assert "venv --system-site-packages" in runs           # Debian's bcc imports from the venv
    assert re.search(r"pip install (--no-binary=cniscope )?'\.\[k8s\]'", runs)
    final = stages()[-1]
    entry = [c for c in final if c.cmd == "ENTRYPOINT"]
    assert len(entry) == 1
    assert entry[0].json
    assert list(entry[0].value) == ["cniscope"]
    user = [c for c in final if c.cmd == "USER"]
    assert user
    assert user[-1].value[0].split(":")[0] not in ("0", "root")


def test_the_package_check_catches_a_package_the_host_does_not_install(tmp_path: Path) -> None:
    other = tmp_path / "Dockerfile"
    other.write_text((ROOT / "daemonset" / "Dockerfile").read_text().replace("iperf3 ", "iperf3 curl ", 1))
    final = apt_packages(stages(other)[-1])
    assert "curl" in final
    assert "curl" not in host_setup_packages()
