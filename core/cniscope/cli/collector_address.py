"""Where people-facing commands find the collector: ``--collector``, else CNISCOPE_COLLECTOR, else
the local lab's socket, else 127.0.0.1:7400.

Talking to a lab's local socket with no token of one's own (neither CNISCOPE_TOKEN nor
CNISCOPE_TOKEN_FILE set), the command presents the lab operator's token when the lab has one: a
Kubernetes lab's collector checks identities as the install does (``cniscope lab up --kubernetes``
writes that token)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

FALLBACK = "127.0.0.1:7400"
OPERATOR_TOKEN = Path("kube") / "install" / "operator-token"   # under a lab's directory


def lab_token(lab_dir: Path) -> Path | None:
    """The lab operator's token file, when this lab's collector checks Kubernetes identities."""
    p = lab_dir / OPERATOR_TOKEN
    return p if p.is_file() else None


def use_lab_credentials(lab_dir: Path) -> None:
    """Present the lab operator's token from now on in this process, unless one's own is set."""
    if "CNISCOPE_TOKEN" in os.environ or "CNISCOPE_TOKEN_FILE" in os.environ:
        return
    tok = lab_token(lab_dir)
    if tok is not None:
        os.environ["CNISCOPE_TOKEN_FILE"] = str(tok)


def _credentials_for(address: str) -> str:
    if address.startswith("unix://"):
        from cniscope.lab.lab import Lab, existing_labs

        for name in existing_labs():
            lab = Lab.existing(name)
            if lab.local_collector == address:
                use_lab_credentials(lab.dir)
                break
    return address


def default_collector() -> str:
    env = os.environ.get("CNISCOPE_COLLECTOR")
    if env:
        return _credentials_for(env)
    from cniscope.lab.lab import Lab

    lab = Lab()
    if lab.collector_socket.exists():
        use_lab_credentials(lab.dir)
        return lab.local_collector
    return FALLBACK


def collector_of(ns: argparse.Namespace) -> str:
    """The address a command's ``--collector`` names, or the default one."""
    given = getattr(ns, "collector", None)
    return _credentials_for(str(given)) if given else default_collector()
