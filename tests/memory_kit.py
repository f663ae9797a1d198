"""The issue's hostile loads against a collector process, and its peak resident memory under each.

The collector runs as its own process (``cniscope collector``, client and agent tokens set) so that
its memory is measured alone: the kernel's peak (``VmHWM``) is reset before each load through
``/proc/PID/clear_refs`` and read after it. Loads (scaled down from the issue's to finish quickly):

- ``health``: connections without a token each announcing a 4 MiB health request and sending all but
  its last byte, held open;
- ``unauthenticated``: the same against ListNodes, which needs a token;
- ``watch``: a Watch(include_samples) that never reads, while an agent sends batches of ~3.2 MiB;
- ``ingest``: two agent streams sending batches of ~3.6 MiB as fast as they can.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from cniscope.api.v1 import agent_pb2, agent_pb2_grpc, cluster_pb2, common_pb2
from cniscope.core import grpcutil, security

sys.path.insert(0, str(Path(__file__).parent))
import h2_raw  # type: ignore[import-not-found]  # noqa: E402
import pipeline_kit as kit  # type: ignore[import-not-found]  # noqa: E402

CLIENT, AGENT = "memory-client-token", "memory-agent-token"
MIB = 1024 * 1024
ANNOUNCED = 4 * MIB - 1          # bytes of a request message the hostile connections announce


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"{field} not in /proc/{pid}/status")


@dataclass
class CollectorProcess:
    proc: subprocess.Popen[bytes]
    address: str

    @property
    def rss(self) -> int:
        return _status(self.proc.pid, "VmRSS")

    def reset_peak(self) -> None:
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    @property
    def peak(self) -> int:
        return _status(self.proc.pid, "VmHWM")


def start(tmp: Path) -> CollectorProcess:
    (tmp / "client").write_text(CLIENT)
    (tmp / "agent").write_text(AGENT)
    port = kit.free_port()
    env = {**os.environ, "CNISCOPE_TOKEN_FILE": str(tmp / "client"), "CNISCOPE_AGENT_TOKEN_FILE": str(tmp / "agent"),
           "CNISCOPE_LOG_LEVEL": "error"}
    env.pop("CNISCOPE_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "cniscope.cli", "collector", "--listen", f"127.0.0.1:{port}",
                             "--db", str(tmp / "c.db")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    c = CollectorProcess(proc, f"127.0.0.1:{port}")
    deadline = time.monotonic() + 30
    while True:
        try:
            with h2_raw.socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                why = proc.stderr.read() if proc.stderr else b""
                raise AssertionError(f"collector did not start: {why!r}") from None
            time.sleep(0.1)
    return c


def stop(c: CollectorProcess) -> None:
    c.proc.terminate()
    try:
        c.proc.wait(20)
    except subprocess.TimeoutExpired:
        c.proc.kill()
        c.proc.wait()


def hostile_requests(c: CollectorProcess, path: str, connections: int, hold: float) -> list[str]:
    """``connections`` connections, one call each announcing ANNOUNCED bytes and sending all but one;
    held for ``hold`` seconds. How each call ended."""
    port = int(c.address.rsplit(":", 1)[1])
    conns = [h2_raw.RawH2("127.0.0.1", port) for _ in range(connections)]
    try:
        sids = [h.open(path, h2_raw.grpc_prefix(ANNOUNCED) + b"\x0a" * (ANNOUNCED - 1)) for h in conns]
        time.sleep(hold)
        return [h.status(sid) for h, sid in zip(conns, sids, strict=True)]
    finally:
        for h in conns:
            h.close()


def big_batch(boot: str, seq: int, mib: float) -> agent_pb2.AgentMessage:
    n = int(mib * MIB / 100)
    now = time.time_ns()
    return agent_pb2.AgentMessage(batch=agent_pb2.Batch(boot_id=boot, seq=seq, time_unix_nano=now, samples=[
        common_pb2.Sample(name=f"hostile_series_{i:07d}_padding_padding", labels={"k": f"v{i:020d}"}, value=1.0,
                          time_unix_nano=now) for i in range(n)]))


async def agent_flood(address: str, node: str, batches: int, mib: float) -> int:
    """An agent stream (agent token) sending ``batches`` batches of ``mib`` MiB; the highest seq acked."""
    boot = f"{node}-boot"
    template = big_batch(boot, 1, mib)

    async def msgs() -> AsyncIterator[agent_pb2.AgentMessage]:
        yield agent_pb2.AgentMessage(hello=agent_pb2.Hello(node=node, boot_id=boot, boot_key="k", host_ip="198.18.0.9",
                                                           time_unix_nano=time.time_ns()))
        for seq in range(1, batches + 1):
            template.batch.seq = seq
            yield template
        await asyncio.sleep(2)  # time for the last acks

    acked = 0
    async with grpcutil.insecure_channel(address) as ch:
        call = agent_pb2_grpc.AgentHubStub(ch).Connect(msgs(), metadata=security.bearer_metadata(AGENT))
        try:
            async for m in call:
                if m.WhichOneof("body") == "ack":
                    acked = max(acked, m.ack.seq)
        except grpc.aio.AioRpcError:
            pass
    return acked


def stalled_watch(c: CollectorProcess) -> tuple[h2_raw.RawH2, int]:
    """A Watch(include_samples) with the client token that never reads what it is sent."""
    port = int(c.address.rsplit(":", 1)[1])
    h = h2_raw.RawH2("127.0.0.1", port)  # it never grants the server a window: nothing is read
    req = cluster_pb2.WatchRequest(include_samples=True).SerializeToString()
    sid = h.open("/cniscope.api.v1.Cluster/Watch", h2_raw.grpc_prefix(len(req)) + req, end=True,
                 metadata=(("authorization", f"Bearer {CLIENT}"),))
    return h, sid
