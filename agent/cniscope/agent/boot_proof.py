"""This agent's proof of its boots (``Hello.boot_key``): a boot key only the agent can make.

The key of a boot is an HMAC of the node and the boot id under a secret the agent keeps: beside its
disk spool (``<spool>.bootkey``, mode 0600), so that a restarted agent can still prove the earlier
boots whose batches it replays; in memory when there is no disk spool (nothing to replay then).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger("cniscope.agent")

SUFFIX = ".bootkey"


class BootProof:
    def __init__(self, node: str, spool_path: str = "") -> None:
        self.node = node
        self._secret = _secret(Path(spool_path + SUFFIX)) if spool_path else secrets.token_bytes(32)

    def key(self, boot_id: str) -> str:
        msg = f"{self.node}\0{boot_id}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()


def _secret(path: Path) -> bytes:
    try:
        data = bytes.fromhex(path.read_text().strip())
        if len(data) >= 32:
            return data
    except (OSError, ValueError):
        pass
    data = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(data.hex() + "\n")
    except OSError as exc:  # the spool itself says what is wrong with its directory
        log.warning("cannot keep the boot key secret in %s (%s): earlier boots cannot be proven after a "
                    "restart", path, exc.strerror)
    return data
