"""Where the lab's Kubernetes binary comes from: ``cniscope-kube``, the multi-call Go harness in
``core/kube-harness`` (etcd, kube-apiserver, kube-controller-manager, kube-proxy, kubectl).

``$CNISCOPE_KUBE_HARNESS`` names a built binary; otherwise ``scripts/build-kube-harness.sh`` of the
checkout builds it into ``.cache/kube-harness/<key>/`` (a no-op when go.mod, go.sum and the sources
are unchanged) and prints its path.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from cniscope.core.errors import LabError, ToolMissing

ENV = "CNISCOPE_KUBE_HARNESS"
REPO = Path(__file__).resolve().parents[4]
BUILD_SCRIPT = REPO / "scripts" / "build-kube-harness.sh"
GO_MOD = REPO / "core" / "kube-harness" / "go.mod"


def kubernetes_version() -> str:
    """The pinned k8s.io/kubernetes version (``v1.31.14``), read from the harness' go.mod."""
    try:
        for line in GO_MOD.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "k8s.io/kubernetes" and parts[1].startswith("v"):
                return parts[1]
    except OSError:
        pass
    return "unknown"


def binary(*, build: bool = True, timeout: float = 3600) -> Path:
    """The harness binary; built (or found up to date) by the build script when ``build``."""
    named = os.environ.get(ENV)
    if named:
        p = Path(named)
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise LabError(f"${ENV}={named} is not an executable file")
        return p
    if not BUILD_SCRIPT.exists():
        raise ToolMissing(f"no {ENV} and no build script at {BUILD_SCRIPT}")
    if not build:
        raise ToolMissing(f"set {ENV} or run {BUILD_SCRIPT}")
    try:
        proc = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        raise LabError(f"building the Kubernetes harness took longer than {timeout:.0f}s") from None
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise LabError(f"building the Kubernetes harness failed:\n{tail}")
    path = Path(proc.stdout.strip().splitlines()[-1])
    if not os.access(path, os.X_OK):
        raise LabError(f"the harness build printed {path}, which is not executable")
    return path
