"""Channel and server options shared by every gRPC endpoint, and address parsing."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from cniscope.core.errors import ConfigError

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# the response header with which the collector admits an agent stream, before the agent's Hello: an
# agent waits for it, so a refusal (a trailers-only answer) is read with the status it was sent with
ADMITTED_HEADER = ("cniscope-admitted", "1")


def client_options(*, keepalive_time: float = 20.0, keepalive_timeout: float = 10.0,
                   max_message: int = MAX_MESSAGE_BYTES) -> list[tuple[str, int | str]]:
    """A half-open link is noticed within keepalive_time + keepalive_timeout seconds."""
    return [
        ("grpc.keepalive_time_ms", int(keepalive_time * 1000)),
        ("grpc.keepalive_timeout_ms", int(keepalive_timeout * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_send_message_length", max_message),
        ("grpc.max_receive_message_length", max_message),
        ("grpc.enable_retries", 0),
        # reconnect pacing is ours (jittered backoff), not the channel's
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]


def server_options(*, max_message: int = MAX_MESSAGE_BYTES) -> list[tuple[str, int | str]]:
    """Accept agent pings every >= 5 s, so a correctly configured agent never sees too_many_pings."""
    return [
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.max_send_message_length", max_message),
        ("grpc.max_receive_message_length", max_message),
        ("grpc.so_reuseport", 0),
    ]


def normalize_address(addr: str) -> str:
    """``host:port``, ``[v6]:port`` or ``unix:///path`` → a gRPC target string."""
    a = addr.strip()
    if not a:
        raise ConfigError("empty address")
    if a.startswith(("unix:", "unix-abstract:")):
        return a
    if a.startswith("/"):
        return f"unix://{a}"
    host, sep, port = a.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"address {addr!r} must be HOST:PORT or unix:///path")
    if not 0 < int(port) < 65536:
        raise ConfigError(f"port {port} out of range in {addr!r}")
    return a


def insecure_channel(address: str, options: Sequence[tuple[str, int | str]] | None = None,
                     credentials: grpc.ChannelCredentials | None = None) -> grpc.aio.Channel:
    target = normalize_address(address)
    opts = list(options if options is not None else client_options())
    if credentials is not None:
        return grpc.aio.secure_channel(target, credentials, options=opts)
    return grpc.aio.insecure_channel(target, options=opts)


def status_code(name: str) -> grpc.StatusCode:
    """The gRPC status named ``name`` (e.g. an error's ``grpc_status``); INTERNAL for an unknown name."""
    return getattr(grpc.StatusCode, name, grpc.StatusCode.INTERNAL)
