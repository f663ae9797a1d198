"""gRPC health checking, open to callers without credentials (Kubernetes probes, ``grpcurl``) and so
bounded: a service name longer than ``MAX_SERVICE`` is refused, at most ``MAX_WATCHES`` Watch calls
are held open, and ``List`` answers (the stock asyncio servicer leaves it unimplemented, which logged
a traceback per call)."""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2

MAX_SERVICE = 256
MAX_WATCHES = 64


class HealthService(health.aio.HealthServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self._watches = 0

    @staticmethod
    async def _check_name(request: health_pb2.HealthCheckRequest, context: Any) -> None:
        if len(request.service) > MAX_SERVICE:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"service name of {len(request.service)} characters (at most {MAX_SERVICE})")

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> Any:  # noqa: N802
        await self._check_name(request, context)
        return await super().Check(request, context)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:  # noqa: N802
        await self._check_name(request, context)
        if self._watches >= MAX_WATCHES:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"{MAX_WATCHES} health watches are open already; use Check")
        self._watches += 1
        try:
            await super().Watch(request, context)
        finally:
            self._watches -= 1

    async def List(self, request: health_pb2.HealthListRequest, context: Any) -> health_pb2.HealthListResponse:  # noqa: N802
        return health_pb2.HealthListResponse(statuses={
            name: health_pb2.HealthCheckResponse(status=status)
            for name, status in self._server_status.items()})
