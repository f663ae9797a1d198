"""grpc.health.v1 for the agent, so Kubernetes liveness/readiness probes (``grpc:`` probes) and
``grpcurl`` work. Served by the agent's own event loop: if the loop wedges, liveness fails.

Services: ``""`` (liveness) SERVING once started; ``readiness`` SERVING once the first capability
report is done, NOT_SERVING before. Nothing here depends on the collector being up.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from cniscope.core import grpcutil
from cniscope.core.errors import ConfigError

READINESS = "readiness"


class HealthServer:
    def __init__(self, listen: str) -> None:
        self.listen = listen
        self.servicer = health.aio.HealthServicer()
        self.server = grpc.aio.server(options=grpcutil.server_options())
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, self.server)
        self.port = 0

    async def start(self) -> None:
        try:
            self.port = self.server.add_insecure_port(grpcutil.normalize_address(self.listen))
        except RuntimeError as exc:
            raise ConfigError(f"cannot listen for health checks on {self.listen}: {exc}") from None
        await self.server.start()
        await self.servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.servicer.set(READINESS, health_pb2.HealthCheckResponse.NOT_SERVING)

    async def ready(self, ok: bool = True) -> None:
        state = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
        await self.servicer.set(READINESS, state)

    async def stop(self) -> None:
        await self.servicer.enter_graceful_shutdown()
        await self.server.stop(grace=1.0)
