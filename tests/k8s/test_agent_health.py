"""The agent's grpc.health.v1 endpoint, as the DaemonSet's liveness and readiness probes call it."""

from __future__ import annotations

import socket

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cniscope.agent.health import READINESS, HealthServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_liveness_serves_at_once_readiness_after_the_first_report() -> None:
    srv = HealthServer(f"127.0.0.1:{free_port()}")
    await srv.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            live = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=3)
            assert live.status == health_pb2.HealthCheckResponse.SERVING
            ready = await stub.Check(health_pb2.HealthCheckRequest(service=READINESS), timeout=3)
            assert ready.status == health_pb2.HealthCheckResponse.NOT_SERVING
            await srv.ready()
            ready = await stub.Check(health_pb2.HealthCheckRequest(service=READINESS), timeout=3)
            assert ready.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await srv.stop()
