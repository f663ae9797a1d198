"""Access control for the collector's gRPC services: a shared bearer token, checked per call.

Both cniscope services (AgentHub, Cluster) require ``authorization: Bearer <token>`` when a token is
configured. gRPC health checking and server reflection stay open on purpose: Kubernetes probes and
``grpcurl list`` need them, and they reveal no cluster data. Mutual TLS, when configured, is enforced
by the transport before any of this runs.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from cniscope.core.security import AUTH_HEADER

log = logging.getLogger("cniscope.collector.auth")

OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]


def _deny_handler(handler: Handler, code: grpc.StatusCode, message: str) -> Handler:  # noqa: F821
    async def deny(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(code, message)

    kw: dict[str, Any] = {"request_deserializer": handler.request_deserializer,
                          "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny, **kw)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny, **kw)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny, **kw)
    return grpc.unary_unary_rpc_method_handler(deny, **kw)


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("an empty token would admit everyone")
        self._expected = f"Bearer {token}".encode()
        self.refused = 0
        self._last_log = 0.0

    def check(self, metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
        """None when admitted, else why not."""
        values = [v for k, v in (metadata or ()) if k == AUTH_HEADER]
        if not values:
            return "missing bearer token (authorization metadata)"
        got = values[0].encode() if isinstance(values[0], str) else values[0]
        if not hmac.compare_digest(got, self._expected):
            return "wrong bearer token"
        return None

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method = handler_call_details.method or ""
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        why = self.check(handler_call_details.invocation_metadata)
        if why is None:
            return handler
        self.refused += 1
        now = time.monotonic()
        if now - self._last_log > 1.0:  # one line a second at most, whatever a scanner sends
            log.warning("refused %s: %s (%d refused so far)", method, why, self.refused)
            self._last_log = now
        return _deny_handler(handler, grpc.StatusCode.UNAUTHENTICATED, f"{why}; see CNISCOPE_TOKEN_FILE")
