"""Access control for the collector's gRPC services, decided before a request's bytes are read.

Every cniscope method needs a verb (:mod:`.principals`); the caller is identified from its bearer
token (the client token, the agent token, or a Kubernetes token checked by :mod:`.kube_auth`) or its
client certificate, then admitted or refused. The check runs before the request message is read: a
unary method is served through a streaming handler that reads its one message only once the caller
is admitted, so an unauthenticated caller never gets more than HTTP/2's initial stream window of its
request buffered here, however large a message it announces.

gRPC health checking and server reflection stay open (Kubernetes probes, ``grpcurl list``); callers
without credentials share a small pool of reads (``OPEN_READS``), each of which must finish within
``OPEN_READ_SECONDS``: a stalled or oversized health request holds at most that pool, briefly.
"""

from __future__ import annotations

import asyncio
import contextvars
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

import grpc

from cniscope.collector.principals import (
    CLIENT_VERBS,
    CONNECT,
    OPEN,
    OPEN_PREFIXES,
    Principal,
    from_certificate,
    verb_of,
)
from cniscope.core.security import AUTH_HEADER

log = logging.getLogger("cniscope.collector.auth")

OPEN_READS = 2               # unauthenticated open-method reads in flight at once, collector-wide
OPEN_READ_SECONDS = 2.0      # an unauthenticated caller's request must have arrived by then
MAX_DETAILS = 1024           # bytes of a status message at most (inputs in it are quoted shorter still)
# streaming-request methods whose servicer calls AuthInterceptor.admit itself, first thing, before it
# reads a message: the agent stream, so that no wrapper sits between every batch and the servicer
SELF_ADMITTED = frozenset({"/cniscope.api.v1.AgentHub/Connect"})

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
    Context = grpc.aio.ServicerContext[Any, Any]

_CURRENT: contextvars.ContextVar[Principal] = contextvars.ContextVar("cniscope_principal")


def current() -> Principal:
    """The principal of the call being served (everyone's, with authentication off)."""
    return _CURRENT.get(OPEN)


class TokenVerifier(Protocol):
    """Checks a bearer token that is neither static token (Kubernetes: TokenReview)."""

    async def principal(self, token: str) -> Principal | str: ...


def _bearer(metadata: Any) -> str | None:
    for k, v in metadata or ():
        if k == AUTH_HEADER:
            text = v.decode("latin-1") if isinstance(v, bytes) else str(v)
            return text[len("Bearer "):] if text.startswith("Bearer ") else ""
    return None


class Authenticator:
    """Identifies callers. ``enabled`` is false when nothing is configured (the lab, a laptop):
    everyone holds every verb then."""

    def __init__(self, client_token: str | None = None, agent_token: str | None = None, *,
                 mtls: bool = False, verifier: TokenVerifier | None = None) -> None:
        if client_token and agent_token and hmac.compare_digest(client_token, agent_token):
            raise ValueError("the agent token and the client token must be different secrets")
        self._client = client_token.encode() if client_token else None
        self._agent = agent_token.encode() if agent_token else None
        self.mtls = mtls
        self.verifier = verifier
        self.enabled = bool(client_token or agent_token or mtls or verifier)

    def static(self, token: str) -> Principal | None:
        raw = token.encode()
        if self._client is not None and hmac.compare_digest(raw, self._client):
            return Principal("client token", CLIENT_VERBS)
        if self._agent is not None and hmac.compare_digest(raw, self._agent):
            return Principal("agent token", frozenset({CONNECT}))
        return None

    def credentialed(self, metadata: Any) -> bool:
        """The call carries a static token this collector knows (checked without a network call)."""
        token = _bearer(metadata)
        return bool(token) and self.static(token or "") is not None

    async def identify(self, context: Context) -> Principal | str:
        """The caller, or why it is not admitted."""
        token = _bearer(context.invocation_metadata())
        cert = _certificate(context)
        if token is not None:
            p = self.static(token) if token else None
            if p is None and token and self.verifier is not None:
                got = await self.verifier.principal(token)
                if isinstance(got, str):
                    return got
                p = got
            if p is None:
                return "wrong bearer token" if token else "malformed authorization (expected 'Bearer <token>')"
            if cert is not None and cert.node and CONNECT in p.verbs and not p.node:
                p = replace(p, node=cert.node)  # the certificate narrows a node-less agent token
            return p
        if cert is not None:  # a certificate alone, where no token of its kind is configured
            if (self._agent if cert.node else self._client) is None:
                return cert
            return f"missing bearer token (a {'agent' if cert.node else 'client'} token is required besides the certificate)"
        if context.peer().startswith("unix:") and self._client is None and self.verifier is None:
            return OPEN  # a unix socket is guarded by its file permissions
        return "missing bearer token (authorization metadata)"


def _certificate(context: Context) -> Principal | None:
    try:
        names = list(context.auth_context().get("x509_common_name") or [])
    except (AttributeError, RuntimeError):
        return None
    if not names:
        return None
    cn = names[0].decode() if isinstance(names[0], bytes) else str(names[0])
    return from_certificate(cn)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every handler so that the caller is admitted before its request is read, and no status
    message it sends is longer than ``MAX_DETAILS`` bytes."""

    def __init__(self, auth: Authenticator) -> None:
        self.auth = auth
        self.refused = 0
        self._last_log = 0.0
        self._open_reads = 0

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(details)
        method = details.method or ""
        if handler is None:
            return handler
        if method.startswith(OPEN_PREFIXES):
            if not self.auth.enabled or self.auth.credentialed(details.invocation_metadata):
                return handler
            return _wrap(handler, self._open_read, None)
        if method in SELF_ADMITTED:
            return handler  # reads nothing before it calls admit(): no wrapper on the ingest path
        return _wrap(handler, _next, (lambda ctx: self.admit(method, ctx)) if self.auth.enabled else None)

    # ---- admission --------------------------------------------------------------------------
    async def admit(self, method: str, context: Context) -> Principal:
        """The caller of ``method``, admitted (or the call aborted, saying why)."""
        if not self.auth.enabled:
            return OPEN
        verb = verb_of(method)
        got = await self.auth.identify(context)
        if isinstance(got, str):
            self._refuse(method, got)
            how = ("people: a Kubernetes token in CNISCOPE_TOKEN (kubectl create token; README: Getting in)"
                   if self.auth.verifier is not None else "people: the client token")
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                f"{got}; agents: CNISCOPE_TOKEN_FILE with the agent token, a client "
                                f"certificate or a Kubernetes service account token; {how}")
        assert isinstance(got, Principal)
        if not got.may(verb):
            self._refuse(method, f"{got.name} may not {verb}")
            hint = ("; bind a ClusterRole that grants it: cniscope-view, cniscope-probe, cniscope-run or "
                    "cniscope-admin") if got.via == "kubernetes" else ""
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"{got.name} is not allowed to {verb} ({method}){hint}")
        _CURRENT.set(got)
        return got

    def _refuse(self, method: str, why: str) -> None:
        self.refused += 1
        now = time.monotonic()
        if now - self._last_log > 1.0:  # one line a second at most, whatever a scanner sends
            log.warning("refused %s: %s (%d refused so far)", method, why, self.refused)
            self._last_log = now

    async def _open_read(self, it: AsyncIterator[Any], context: Context) -> Any:
        """The next message of an unauthenticated open call: from a small shared pool, quickly."""
        if self._open_reads >= OPEN_READS:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                "too many unauthenticated requests in flight; retry shortly")
        self._open_reads += 1
        try:
            return await asyncio.wait_for(_next(it, context), OPEN_READ_SECONDS)
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                                f"request not received within {OPEN_READ_SECONDS:g}s")
        finally:
            self._open_reads -= 1


_END = object()


async def _next(it: AsyncIterator[Any], _context: Context) -> Any:
    """The next request message, or ``_END``."""
    try:
        return await it.__anext__()
    except StopAsyncIteration:
        return _END


Reader = Callable[[AsyncIterator[Any], "Context"], Awaitable[Any]]
Admit = Callable[["Context"], Awaitable[Any]] | None


def bounded(details: str) -> str:
    raw = details.encode("utf-8", "replace")
    if len(raw) <= MAX_DETAILS:
        return details
    return raw[:MAX_DETAILS - 30].decode("utf-8", "ignore") + f"… ({len(raw)} bytes in all)"


class _BoundedContext:
    """The call's context as the servicer sees it: every status message bounded."""

    def __init__(self, context: Context) -> None:
        self._context = context

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> None:
        await self._context.abort(code, bounded(details), trailing_metadata)

    def set_details(self, details: str) -> None:
        self._context.set_details(bounded(details))


def _wrap(handler: Handler, read: Reader, admit: Admit) -> Handler:
    """``handler`` served from a request stream: ``admit`` first, then each request through ``read``."""
    kw: dict[str, Any] = {"request_deserializer": handler.request_deserializer,
                          "response_serializer": handler.response_serializer}
    behaviour: Any = handler  # the servicer's async methods (grpc's stubs type them as sync)

    class h:  # noqa: N801  # the behaviours, called with the bounded context
        @staticmethod
        def stream_stream(it: Any, context: Context) -> Any:
            return behaviour.stream_stream(it, _BoundedContext(context))

        @staticmethod
        def stream_unary(it: Any, context: Context) -> Any:
            return behaviour.stream_unary(it, _BoundedContext(context))

        @staticmethod
        def unary_stream(request: Any, context: Context) -> Any:
            return behaviour.unary_stream(request, _BoundedContext(context))

        @staticmethod
        def unary_unary(request: Any, context: Context) -> Any:
            return behaviour.unary_unary(request, _BoundedContext(context))

    async def one(it: AsyncIterator[Any], context: Context) -> Any:
        if admit is not None:
            await admit(context)
        msg = await read(it, context)
        if msg is _END:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the call carried no request message")
        return msg

    async def each(it: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
        while (msg := await read(it, context)) is not _END:
            yield msg

    if handler.request_streaming and handler.response_streaming:
        async def ss(it: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
            if admit is not None:
                await admit(context)
            async for out in h.stream_stream(each(it, context), context):
                yield out
        return grpc.stream_stream_rpc_method_handler(ss, **kw)
    if handler.request_streaming:
        async def su(it: AsyncIterator[Any], context: Context) -> Any:
            if admit is not None:
                await admit(context)
            return await h.stream_unary(each(it, context), context)
        return grpc.stream_unary_rpc_method_handler(su, **kw)
    if handler.response_streaming:
        async def us(it: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
            async for out in h.unary_stream(await one(it, context), context):
                yield out
        return grpc.stream_stream_rpc_method_handler(us, **kw)

    async def uu(it: AsyncIterator[Any], context: Context) -> Any:
        return await h.unary_unary(await one(it, context), context)
    return grpc.stream_unary_rpc_method_handler(uu, **kw)
