"""Peer tables are coalesced on connect, yet a command never reaches an agent ahead of the peers it
names: a probe fired the moment a second node joins must find that node in the source agent's table."""

from __future__ import annotations

import asyncio

from cniscope.api.v1 import agent_pb2
from cniscope.collector.state import ClusterState, Session


def _hello(node: str, n: int) -> agent_pb2.Hello:
    return agent_pb2.Hello(node=node, boot_id=f"boot-{node}", host_ip=f"198.18.0.{n}",
                           pod_ip=f"198.19.{n}.2")


def _tables(s: Session) -> list[list[str]]:
    out = []
    while not s.outbox.empty():
        m = s.outbox.get_nowait()
        if isinstance(m, bytes):  # a broadcast is encoded once for every stream
            m = agent_pb2.CollectorMessage.FromString(m)
        if m.WhichOneof("body") == "peers":
            out.append([p.node for p in m.peers.peers])
    return out


def test_pending_broadcast_is_flushed_to_a_command_receiver() -> None:
    async def main() -> None:
        st = ClusterState()
        a, b = Session("node1", "boot-node1"), Session("node2", "boot-node2")
        st.connect(_hello("node1", 1), a, 0)
        st.connect(_hello("node2", 2), b, 0)
        # node1 learnt only itself at connect; node2's arrival waits for the coalesced broadcast
        assert _tables(a) == [["node1"]]
        st.flush_peers_to(a)
        assert _tables(a) == [["node1", "node2"]]
        await asyncio.sleep(0.2)  # the coalesced broadcast still goes out to everyone
        assert _tables(a)[-1] == ["node1", "node2"]
        assert _tables(b)[-1] == ["node1", "node2"]

    asyncio.run(main())


def test_no_extra_table_when_nothing_is_pending() -> None:
    st = ClusterState()
    a = Session("node1", "boot-node1")
    st.connect(_hello("node1", 1), a, 0)  # no loop: the broadcast fires at once
    _tables(a)
    st.flush_peers_to(a)
    assert _tables(a) == []
