"""Samplers turn node state into Prometheus-style samples every interval."""

from __future__ import annotations

from typing import Protocol

from cniscope.api.v1 import common_pb2


class Sampler(Protocol):
    name: str

    def sample(self, now_ns: int) -> list[common_pb2.Sample]:
        """Blocking; the agent calls it in a worker thread. Must not raise for 'does not apply'."""
        ...


def make_sample(name: str, value: float, now_ns: int, **labels: str) -> common_pb2.Sample:
    return common_pb2.Sample(name=name, value=float(value), time_unix_nano=now_ns, labels=labels)
