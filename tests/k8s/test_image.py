"""The image build file, parsed with the official Dockerfile parser (the `dockerfile` package wraps
moby/buildkit's): base image pinned by version, every Debian package it installs is one the host
setup (Makefile → scripts/host-setup.sh) installs too, the tools the agent runs are in the final
stage, it builds the same package the README installs, runs non-root by default, and its entrypoint
is the `cniscope` command."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import dockerfile

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


def test_base_images_are_pinned_by_version() -> None:
    for stage in stages():
        image = stage[0].value[0]
        name, _, tag = image.partition(":")
        assert name == "debian"
        assert re.fullmatch(r"\d+\.\d+(-slim)?", tag) or "@sha256:" in image, f"{image} is not pinned"


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
    assert re.search(r"pip install '\.\[k8s\]'", runs)
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
