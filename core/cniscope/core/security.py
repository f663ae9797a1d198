"""TLS credentials from files, and the file signature the agent watches to rebuild its channel.

The bearer token travels as ``authorization: Bearer <token>`` metadata; it is read from a file or the
``CNISCOPE_TOKEN`` environment variable (``config.read_token``), never from the command line.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import grpc

from cniscope.core.errors import ConfigError

AUTH_HEADER = "authorization"

log = logging.getLogger("cniscope.security")


def _read(path: str, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    if not data.strip():
        raise ConfigError(f"{what} {path} is empty")
    return data


def server_credentials(cert: str, key: str, client_ca: str = "") -> grpc.ServerCredentials | None:
    """TLS for the collector; with ``client_ca`` every client must present a certificate it signed.

    The files are read again when they change (checked as each new connection is accepted), so a
    rotated certificate is served to new connections without a restart; connections already open
    keep theirs. A rotation caught half-written (unreadable) keeps the previous certificate."""
    if not cert and not key:
        if client_ca:
            raise ConfigError("tls_ca (client CA) needs tls_cert and tls_key for the server itself")
        return None
    if not (cert and key):
        raise ConfigError("TLS needs both tls_cert and tls_key")

    def load() -> grpc.ServerCertificateConfiguration:
        pair = (_read(key, "TLS key"), _read(cert, "TLS certificate"))
        return grpc.ssl_server_certificate_configuration(
            [pair], root_certificates=_read(client_ca, "client CA") if client_ca else None)

    seen = [files_signature(cert, key, client_ca)]
    initial = load()

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        now = files_signature(cert, key, client_ca)
        if now == seen[0]:
            return None
        try:
            fresh = load()
        except ConfigError as exc:
            log.warning("TLS files changed but cannot be read (%s): still serving the previous certificate", exc)
            return None
        seen[0] = now
        log.info("TLS files changed: new connections get the new certificate")
        return fresh

    # the fetcher returns None for "unchanged", as grpc documents (its type stubs say otherwise)
    return grpc.dynamic_ssl_server_credentials(initial, fetch,  # type: ignore[arg-type]
                                               require_client_authentication=bool(client_ca))


def client_credentials(ca: str, cert: str = "", key: str = "") -> grpc.ChannelCredentials | None:
    """TLS for a client (agent, CLI, TUI): the server's CA, and our own certificate for mutual TLS."""
    if not ca and not cert:
        return None
    if bool(cert) != bool(key):
        raise ConfigError("a client certificate needs both tls_cert and tls_key")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca, "TLS CA") if ca else None,
        private_key=_read(key, "TLS key") if key else None,
        certificate_chain=_read(cert, "TLS certificate") if cert else None,
    )


def files_signature(*paths: str) -> tuple[tuple[str, int, int], ...]:
    """(path, mtime_ns, size) of each existing file: it changes when a certificate is rotated."""
    out = []
    for p in paths:
        if not p:
            continue
        try:
            st = os.stat(p)
            out.append((p, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((p, -1, -1))
    return tuple(out)


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return ((AUTH_HEADER, f"Bearer {token}"),) if token else ()


def client_credentials_from_env(env: dict[str, str] | None = None) -> grpc.ChannelCredentials | None:
    """People-facing clients (CLI, TUI): TLS from CNISCOPE_TLS_CA / _CERT / _KEY, plaintext when unset."""
    e = os.environ if env is None else env
    return client_credentials(e.get("CNISCOPE_TLS_CA", ""), e.get("CNISCOPE_TLS_CERT", ""),
                              e.get("CNISCOPE_TLS_KEY", ""))
