"""From the collector's settings to its access control, its transport limits and its probe-target
knowledge — with a configuration error, before anything listens, when the settings cannot be right."""

from __future__ import annotations

import os
from pathlib import Path

from cniscope.collector.auth import Authenticator
from cniscope.collector.kube_auth import kubernetes_verifier
from cniscope.collector.target_trust import TargetTrust, kubernetes_fetch
from cniscope.core import grpcutil, kubeapi
from cniscope.core.config import AgentConfig, CollectorConfig, env_value, read_token
from cniscope.core.errors import ConfigError

HANDSHAKE_MS = 5_000           # a TLS handshake not finished by then is dropped
MAX_STREAMS = 128              # concurrent calls on one connection


def _agent_token(path: str) -> str | None:
    if not path:
        return None
    try:
        tok = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read agent token file {path}: {exc.strerror}") from None
    if not tok:
        raise ConfigError(f"agent token file {path} is empty")
    return tok


def authenticator(cfg: CollectorConfig) -> Authenticator:
    client = read_token(cfg.token_file)
    agent = _agent_token(cfg.agent_token_file)
    mtls = bool(cfg.tls_ca)
    verifier = kubernetes_verifier(cfg.kube_audience, cfg.kube_agent_account) if cfg.kube_auth == "on" else None
    if client and not agent and not mtls and verifier is None:
        raise ConfigError("a client token is set (CNISCOPE_TOKEN_FILE / CNISCOPE_TOKEN) but no agent token: "
                          "agents and people need different secrets — set CNISCOPE_AGENT_TOKEN_FILE "
                          "(or mutual TLS with agent certificates)")
    if agent and not client and not mtls and verifier is None:
        raise ConfigError("an agent token is set (CNISCOPE_AGENT_TOKEN_FILE) but no client token: nobody "
                          "could read what agents send — set CNISCOPE_TOKEN_FILE too")
    try:
        return Authenticator(client, agent, mtls=mtls, verifier=verifier)
    except ValueError as exc:
        raise ConfigError(f"{exc} (CNISCOPE_TOKEN_FILE and CNISCOPE_AGENT_TOKEN_FILE hold the same token)") from None


def server_options(cfg: CollectorConfig) -> list[tuple[str, int | str]]:
    """gRPC's defaults, except: HTTP/2 flow-control windows start at 64 KiB and grow only as the
    collector reads (no bandwidth-delay probing, which announced the 4 MiB message size as every new
    stream's window: a caller refused before its request is read could still push 4 MiB per stream),
    a short TLS handshake, and a bound on calls per connection."""
    return [*grpcutil.server_options(max_message=cfg.max_message_bytes),
            ("grpc.http2.bdp_probe", 0),
            ("grpc.server_handshake_timeout_ms", HANDSHAKE_MS),
            ("grpc.max_concurrent_streams", MAX_STREAMS)]


def target_trust(cfg: CollectorConfig) -> TargetTrust:
    """The allow-list, and in Kubernetes the Node objects and probe pods read from the API server."""
    fetch = None
    if kubeapi.wanted("auto") and "CNISCOPE_ALLOW_CIDRS" not in os.environ:
        fetch = kubernetes_fetch(env_value(AgentConfig, "probe_namespace"), env_value(AgentConfig, "probe_selector"))
    return TargetTrust(cfg.allow_cidrs, fetch)
