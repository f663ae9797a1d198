"""Helpers for probe tests in the lab: a module-wide cluster and a RunProbe call."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from cniscope.api.v1 import cluster_pb2_grpc, common_pb2
from cniscope.core import grpcutil
from cniscope.lab.lab import Lab, LabSpec


@contextlib.contextmanager
def running_cluster(root: Path, nodes: int = 3, pods_per_node: int = 1,
                    agent_args: tuple[str, ...] = (), tracers: tuple[str, ...] = (),
                    tracer_nodes: tuple[str, ...] | None = None, sample_interval: float = 1.0) -> Iterator[Lab]:
    from conftest import new_lab_name, wait_connected  # type: ignore[import-not-found]

    lab = Lab(LabSpec(name=new_lab_name(), nodes=nodes, pods_per_node=pods_per_node), state_root=root / "labs")
    try:
        lab.up()
        lab.start_cluster(db=root / "c.db", sample_interval=sample_interval, extra_agent_args=agent_args, tracers=tracers,
                          tracer_nodes=tracer_nodes)
        wait_connected(lab, nodes)
        yield lab
    finally:
        lab.down()


async def run_probe(address: str, kind: str, src: str, dst: str = "", path: str = "host",
                    target_address: str = "", **params: str) -> tuple[common_pb2.ProbeResult, list[str]]:
    progress: list[str] = []
    async with grpcutil.insecure_channel(address) as ch:
        stub = cluster_pb2_grpc.ClusterStub(ch)
        req = common_pb2.ProbeRequest(kind=kind, source_node=src, target_node=dst, path=path,
                                      target_address=target_address, params=params)
        result = None
        async for upd in stub.RunProbe(req):
            if upd.WhichOneof("body") == "result":
                result = upd.result
            else:
                progress.append(upd.progress.message)
        assert result is not None
        return result, progress
