"""A hand-driven agent stream for hostile-client tests: say Hello as any node with any boot id and key,
send any message, see every reply and how the stream ended."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc

from cniscope.api.v1 import agent_pb2, agent_pb2_grpc, common_pb2

__all__ = ["FakeAgent", "agent_pb2", "batch", "hello"]
from cniscope.core import grpcutil


def hello(node: str, boot: str, key: str = "", host_ip: str = "198.18.0.50", **kw: Any) -> agent_pb2.AgentMessage:
    return agent_pb2.AgentMessage(hello=agent_pb2.Hello(node=node, boot_id=boot, boot_key=key, host_ip=host_ip,
                                                        time_unix_nano=time.time_ns(), **kw))


def batch(boot: str, seq: int, *results: common_pb2.ProbeResult, value: float = 1.0) -> agent_pb2.AgentMessage:
    return agent_pb2.AgentMessage(batch=agent_pb2.Batch(
        boot_id=boot, seq=seq, time_unix_nano=time.time_ns(),
        samples=[common_pb2.Sample(name="x", value=value, time_unix_nano=time.time_ns())],
        probe_results=list(results)))


class FakeAgent:
    """One AgentHub stream driven by hand. ``replies`` collects what the collector sends; ``ended``
    holds the stream's final status once it ends."""

    def __init__(self, address: str, metadata: tuple[tuple[str, str], ...] = (),
                 credentials: grpc.ChannelCredentials | None = None, *, after_admission: bool = False) -> None:
        self.after_admission = after_admission   # send nothing before the collector's response headers
        self._call: Any = None
        self.address = address
        self.metadata = metadata
        self.credentials = credentials
        self.replies: list[agent_pb2.CollectorMessage] = []
        self.ended: asyncio.Future[tuple[grpc.StatusCode, str]] | None = None
        self._out: asyncio.Queue[agent_pb2.AgentMessage | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._channel: grpc.aio.Channel | None = None

    async def start(self, *first: agent_pb2.AgentMessage) -> FakeAgent:
        for m in first:
            self._out.put_nowait(m)
        self.ended = asyncio.get_running_loop().create_future()
        self._channel = grpcutil.insecure_channel(self.address, credentials=self.credentials)
        self._task = asyncio.create_task(self._run())
        return self

    def send(self, *msgs: agent_pb2.AgentMessage) -> None:
        for m in msgs:
            self._out.put_nowait(m)

    async def _requests(self) -> Any:
        if self.after_admission and self._call is not None:
            headers = await self._call.initial_metadata()   # admitted, or a refusal's trailers-only answer
            if grpcutil.ADMITTED_HEADER not in tuple(headers or ()):
                return
        while (m := await self._out.get()) is not None:
            yield m

    async def _run(self) -> None:
        assert self._channel is not None
        assert self.ended is not None
        call = self._call = agent_pb2_grpc.AgentHubStub(self._channel).Connect(self._requests(),
                                                                              metadata=self.metadata)
        try:
            async for msg in call:
                self.replies.append(msg)
            self.ended.set_result((grpc.StatusCode.OK, ""))
        except grpc.aio.AioRpcError as exc:
            self.ended.set_result((exc.code(), exc.details() or ""))

    def commands(self) -> list[agent_pb2.Command]:
        return [m.command for m in self.replies if m.WhichOneof("body") == "command"]

    def welcomed(self) -> bool:
        return any(m.WhichOneof("body") == "welcome" for m in self.replies)

    def acked(self) -> int:
        return max((m.ack.seq for m in self.replies if m.WhichOneof("body") == "ack"), default=0)

    async def status(self, within: float = 10.0) -> tuple[grpc.StatusCode, str]:
        assert self.ended is not None
        return await asyncio.wait_for(asyncio.shield(self.ended), within)

    async def close(self) -> None:
        self._out.put_nowait(None)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._channel is not None:
            await self._channel.close()
