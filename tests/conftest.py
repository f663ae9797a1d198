"""Shared fixtures: capability gating by marker, and labs that always clean up."""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from caps import require  # type: ignore[import-not-found]  # noqa: E402

from cniscope.lab.lab import Lab, LabSpec  # noqa: E402

_counter = itertools.count(1)


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in ("netns", "bpf", "bcc"):
        if item.get_closest_marker(marker) is not None:
            require(marker)


def new_lab_name() -> str:
    return f"t{os.getpid() % 10000}{next(_counter)}"


@pytest.fixture
def lab_factory(tmp_path: Path) -> Iterator[object]:
    """Build labs on demand; every lab made here is torn down, whatever the test did."""
    made: list[Lab] = []

    def make(nodes: int = 3, pods_per_node: int = 1) -> Lab:
        lab = Lab(LabSpec(name=new_lab_name(), nodes=nodes, pods_per_node=pods_per_node),
                  state_root=tmp_path / "labs")
        made.append(lab)
        lab.up()
        return lab

    yield make
    for lab in made:
        lab.down()


@pytest.fixture
def lab(lab_factory: object) -> Lab:
    return lab_factory()  # type: ignore[operator, no-any-return]


@pytest.fixture
def cluster(lab: Lab, tmp_path: Path) -> Lab:
    """A 3-node lab with a collector in the fabric and an agent per node, all connected."""
    lab.start_cluster(db=tmp_path / "collector.db", sample_interval=0.5)
    wait_connected(lab, 3)
    return lab


def wait_connected(lab: Lab, count: int, timeout: float = 20.0) -> list[object]:
    from cniscope.client.grpc_collector import list_nodes

    deadline = time.monotonic() + timeout
    nodes: list[object] = []
    last_error: Exception | None = None  # the latest failure to list the nodes, if any
    while time.monotonic() < deadline:
        try:
            nodes = list(asyncio.run(list_nodes(lab.local_collector, deadline=2)))
            if sum(1 for n in nodes if getattr(n, "status", 0) == 1) >= count:
                return nodes
        except Exception as exc:  # the collector may still be starting: try again, keep the reason
            last_error = exc
        time.sleep(0.2)
    logs = "\n".join(f"--- {p['role']}\n" + Path(p["log"]).read_text()[-2000:]
                     for p in lab.status()["processes"] if Path(p["log"]).exists())
    why = f"; last error while listing nodes: {type(last_error).__name__}: {last_error}" if last_error else ""
    raise AssertionError(f"{count} agents did not connect within {timeout}s; nodes={nodes}{why}\n{logs}")
