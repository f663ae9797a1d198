"""kubectl's ``--kubeconfig`` and ``--context`` for every command that reaches a Kubernetes API."""

from __future__ import annotations

import argparse


def add_kubeconfig_flags(p: argparse.ArgumentParser) -> None:
    """kubectl's ``--kubeconfig`` and ``--context``, with kubectl's meaning."""
    p.add_argument("--kubeconfig", default="", help="kubeconfig file (default: $KUBECONFIG, merged, "
                                                   "else ~/.kube/config, else the pod's service account)")
    p.add_argument("--context", default="", help="kubeconfig context (default: its current-context)")
