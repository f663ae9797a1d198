"""Per-node identity and roles (issue 13, findings 1, 3 and 4), against a real collector over TCP.

Each test first does what the hostile client did — a client-chosen 200-character probe id, a result
forged by another node, a Hello with a node's boot id read through GetNode, an agent token calling
RunProbe — and shows it refused with a status that says why, while the honest agent and caller
carry on."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest

from cniscope.agent.node_agent import NodeAgent
from cniscope.api.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2
from cniscope.collector.server import Collector
from cniscope.core import grpcutil, security
from cniscope.core.config import AgentConfig, CollectorConfig
from cniscope.core.errors import ConfigError

sys.path.insert(0, str(Path(__file__).parents[1]))
import hostile_kit as hk  # type: ignore[import-not-found]  # noqa: E402
import pipeline_kit as kit  # type: ignore[import-not-found]  # noqa: E402

CLIENT, AGENT = "client-s3cret", "agent-s3cret"


def _tokens(tmp: Path) -> dict[str, str]:
    (tmp / "client").write_text(CLIENT)
    (tmp / "agent").write_text(AGENT)
    return {"token_file": str(tmp / "client"), "agent_token_file": str(tmp / "agent")}


def _agent(address: str, node: str = "n1", **kw: Any) -> NodeAgent:
    return NodeAgent(AgentConfig(node=node, collector=address, host_ip="198.18.0.11", sample_interval=0.1,
                                 backoff_initial=0.05, backoff_max=0.2, mesh_interval=0, **kw))


async def _first_update(stub: Any, req: common_pb2.ProbeRequest) -> tuple[Any, cluster_pb2.ProbeUpdate]:
    call = stub.RunProbe(req)
    first = await asyncio.wait_for(call.read(), 10)
    return call, first


async def test_probe_ids_are_the_collectors_and_only_the_source_node_answers(tmp_path: Path) -> None:
    c = await kit.start_collector(tmp_path)
    addr = kit.address(c)
    n1 = await hk.FakeAgent(addr).start(hk.hello("n1", "boot-1", "key-1", host_ip="198.18.0.51"))
    n2 = await hk.FakeAgent(addr).start(hk.hello("n2", "boot-2", "key-2", host_ip="198.18.0.52"))
    n3 = await hk.FakeAgent(addr).start(hk.hello("n3", "boot-3", "key-3", host_ip="198.18.0.53"))
    try:
        await kit.until(lambda: {"n1", "n2", "n3"} <= set(c.state.sessions), what="three agents")
        async with grpcutil.insecure_channel(addr) as ch:
            stub = cluster_pb2_grpc.ClusterStub(ch)
            req = common_pb2.ProbeRequest(probe_id="p" * 200, kind="rtt", source_node="n1", target_node="n2")
            call1, first1 = await _first_update(stub, req)
            call2, first2 = await _first_update(stub, req)  # the same client-chosen id again
            id1, id2 = first1.progress.probe_id, first2.progress.probe_id
            assert first1.progress.message == f"admitted as probe {id1}"
            assert len(id1) == 16
            assert id1 != "p" * 200
            assert id2 != id1
            await kit.until(lambda: {cmd.run_probe.probe_id for cmd in n1.commands()} >= {id1, id2},
                            what="both commands at n1")

            # n2 forges a result for n1's probe: refused, n2's stream ends, the caller never sees it
            n2.send(hk.batch("boot-2", 1, common_pb2.ProbeResult(probe_id=id1, kind="rtt", ok=False,
                                                                  error="forged")))
            code, details = await n2.status()
            assert code == grpc.StatusCode.PERMISSION_DENIED
            assert "was sent to node n1, not to n2" in details
            # n3 claims to be n1 in the result itself, and sends progress for n1's probe: refused too
            n3.send(hk.batch("boot-3", 1, common_pb2.ProbeResult(probe_id="mesh-x", source_node="n1", kind="rtt")))
            code, details = await n3.status()
            assert code == grpc.StatusCode.PERMISSION_DENIED
            assert "names source node 'n1'" in details
            assert c.dispatcher.pending[id1].result.done() is False

            n1.send(hk.batch("boot-1", 1, common_pb2.ProbeResult(
                probe_id=id1, kind="rtt", source_node="n1", ok=True, figures={"p50_us": 50.0})))
            updates = []
            while (u := await asyncio.wait_for(call1.read(), 10)) is not grpc.aio.EOF:
                updates.append(u)
            assert updates[-1].result.ok
            assert updates[-1].result.figures["p50_us"] == 50.0
            assert updates[-1].result.probe_id == id1
            call2.cancel()
        assert "n1" in c.state.sessions
        assert any("refused: probe" in e.message for e in c.state.recent_logs)
    finally:
        for a in (n1, n2, n3):
            await a.close()
        await c.stop()


async def test_progress_from_another_node_is_refused(tmp_path: Path) -> None:
    c = await kit.start_collector(tmp_path)
    addr = kit.address(c)
    n1 = await hk.FakeAgent(addr).start(hk.hello("n1", "boot-1", "k1", host_ip="198.18.0.51"))
    n2 = await hk.FakeAgent(addr).start(hk.hello("n2", "boot-2", "k2", host_ip="198.18.0.52"))
    try:
        await kit.until(lambda: {"n1", "n2"} <= set(c.state.sessions), what="two agents")
        async with grpcutil.insecure_channel(addr) as ch:
            call, first = await _first_update(cluster_pb2_grpc.ClusterStub(ch), common_pb2.ProbeRequest(
                kind="rtt", source_node="n1", target_node="n2"))
            pid = first.progress.probe_id
            n2.send(hk.agent_pb2.AgentMessage(probe_progress=common_pb2.ProbeProgress(
                probe_id=pid, fraction=0.5, message="forged")))
            code, details = await n2.status()
            assert code == grpc.StatusCode.PERMISSION_DENIED
            assert "which was sent to node n1" in details
            call.cancel()
    finally:
        await n1.close()
        await n2.close()
        await c.stop()


async def test_a_boot_id_read_through_getnode_cannot_take_over_a_node(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    port = kit.free_port()

    async def collector() -> Collector:
        col = Collector(CollectorConfig(db=str(db), listen=f"127.0.0.1:{port}"))
        await col.start()
        return col

    c = await collector()
    addr = kit.address(c)
    spool = tmp_path / "spool"
    real = _agent(addr, spool_path=str(spool))
    task = asyncio.create_task(real.run())
    attackers: list[hk.FakeAgent] = []

    async def attack(*msgs: Any) -> tuple[grpc.StatusCode, str]:
        a = await hk.FakeAgent(addr).start(*msgs)
        attackers.append(a)
        got: tuple[grpc.StatusCode, str] = await a.status()
        return got

    try:
        await kit.until(lambda: "n1" in c.state.sessions and c.state.nodes["n1"].last_seq >= 2, what="n1 batches")
        async with grpcutil.insecure_channel(addr) as ch:
            boot = (await cluster_pb2_grpc.ClusterStub(ch).GetNode(cluster_pb2.GetNodeRequest(node="n1"))).boot_id
        session = c.state.sessions["n1"]
        for key in ("", "a-guessed-key"):
            code, details = await attack(hk.hello("n1", boot, key), hk.batch(boot, 10_000))
            assert code == grpc.StatusCode.PERMISSION_DENIED, details
            assert f"node n1 boot {boot[:16]} was started by another agent" in details
        code, details = await attack(hk.hello("n1", "a-new-boot", "k", replay_boot_ids=[boot]))
        assert code == grpc.StatusCode.PERMISSION_DENIED, details
        # the real agent was never kicked, and its batches are still acked under its own seqs
        assert c.state.sessions["n1"] is session
        assert real.session.reconnects == 0
        seq = c.state.nodes["n1"].last_seq
        await kit.until(lambda: c.state.nodes["n1"].last_seq > seq + 2 and real.spool.depth <= 1,
                        what="the real agent's later batches acked")
        assert c.store.acked_seq("n1", boot) < 10_000

        # the agent stops; neither its boot nor a replay of it can be claimed while it is away ...
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await kit.until(lambda: "n1" not in c.state.sessions, what="n1 gone")
        code, _ = await attack(hk.hello("n1", boot, "wrong"))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        # ... nor after a collector restart (the binding is in the store)
        await c.stop()
        c = await collector()
        code, details = await attack(hk.hello("n1", "another-boot", "k", replay_boot_ids=[boot]))
        assert code == grpc.StatusCode.PERMISSION_DENIED, details
        # the real agent, restarted with its disk spool, proves its earlier boot and replays it
        again = _agent(addr, spool_path=str(spool))
        assert boot in again.spool.other_boots() or again.spool.depth == 0
        task = asyncio.create_task(again.run())
        await kit.until(lambda: "n1" in c.state.sessions and c.state.nodes["n1"].boot_id == again.boot_id,
                        what="the restarted agent connected")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for a in attackers:
            await a.close()
        await c.stop()


async def test_agent_and_client_tokens_are_different_roles(tmp_path: Path) -> None:
    c = await kit.start_collector(tmp_path, **_tokens(tmp_path))
    addr = kit.address(c)
    try:
        async with grpcutil.insecure_channel(addr) as ch:
            stub = cluster_pb2_grpc.ClusterStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as ei:  # an agent token cannot run probes ...
                async for _ in stub.RunProbe(common_pb2.ProbeRequest(kind="rtt", source_node="n1", target_node="n2"),
                                             metadata=security.bearer_metadata(AGENT)):
                    pass
            assert ei.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "agent token is not allowed to probe" in (ei.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as ei:  # ... nor read the cluster
                await stub.ListNodes(cluster_pb2.ListNodesRequest(), metadata=security.bearer_metadata(AGENT))
            assert ei.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert (await stub.ListNodes(cluster_pb2.ListNodesRequest(),
                                         metadata=security.bearer_metadata(CLIENT))).nodes == []
        as_client = await hk.FakeAgent(addr, security.bearer_metadata(CLIENT)).start(hk.hello("n1", "b", "k"))
        code, details = await as_client.status()
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "client token is not allowed to connect" in details
        anonymous = await hk.FakeAgent(addr).start(hk.hello("n1", "b", "k"))
        assert (await anonymous.status())[0] == grpc.StatusCode.UNAUTHENTICATED
        agent = await hk.FakeAgent(addr, security.bearer_metadata(AGENT)).start(hk.hello("n1", "b", "k"))
        await kit.until(agent.welcomed, what="the agent token admitted to connect")
        for a in (as_client, anonymous, agent):
            await a.close()
    finally:
        await c.stop()


def test_one_secret_for_both_roles_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "same").write_text("same-token")
    cases = {"the same token twice": {"token_file": str(tmp_path / "same"), "agent_token_file": str(tmp_path / "same")},
             "a client token alone": {"token_file": str(tmp_path / "same")},
             "an agent token alone": {"agent_token_file": str(tmp_path / "same")}}
    for why, cfg in cases.items():
        with pytest.raises(ConfigError, match="token") as ei:
            Collector(CollectorConfig(db=str(tmp_path / "c.db"), token_file=cfg.get("token_file", ""),
                                      agent_token_file=cfg.get("agent_token_file", "")))
        assert "CNISCOPE_AGENT_TOKEN_FILE" in str(ei.value) or "CNISCOPE_TOKEN_FILE" in str(ei.value), why


def _pki(tmp: Path) -> dict[str, Path]:
    ca = kit.make_ca("cniscope test CA")
    files: dict[str, bytes] = {"ca.pem": kit.pem(ca[1])}
    files["server.pem"], files["server.key"] = kit.issue(ca, "collector", server=True)
    files["alice.pem"], files["alice.key"] = kit.issue(ca, "alice", server=False)
    files["n1.pem"], files["n1.key"] = kit.issue(ca, "cniscope-agent:n1", server=False)
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    return {name: tmp / name for name in files}


async def test_with_mutual_tls_an_agent_speaks_only_for_the_node_its_certificate_names(tmp_path: Path) -> None:
    pki = _pki(tmp_path)
    c = await kit.start_collector(tmp_path, tls_cert=str(pki["server.pem"]), tls_key=str(pki["server.key"]),
                                  tls_ca=str(pki["ca.pem"]))
    addr = kit.address(c)

    def creds(who: str) -> grpc.ChannelCredentials:
        got = security.client_credentials(str(pki["ca.pem"]), str(pki[f"{who}.pem"]), str(pki[f"{who}.key"]))
        assert got is not None
        return got

    agents: list[hk.FakeAgent] = []
    try:
        as_n2 = await hk.FakeAgent(addr, credentials=creds("n1")).start(hk.hello("n2", "b", "k"))
        agents.append(as_n2)
        code, details = await as_n2.status()
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "agent certificate of n1 speaks for node 'n1' only, not 'n2'" in details
        alice = await hk.FakeAgent(addr, credentials=creds("alice")).start(hk.hello("n1", "b", "k"))
        agents.append(alice)
        assert (await alice.status())[0] == grpc.StatusCode.PERMISSION_DENIED
        as_n1 = await hk.FakeAgent(addr, credentials=creds("n1")).start(hk.hello("n1", "b", "k"))
        agents.append(as_n1)
        await kit.until(as_n1.welcomed, what="n1's certificate admitted as n1")
        async with grpcutil.insecure_channel(addr, credentials=creds("n1")) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await cluster_pb2_grpc.ClusterStub(ch).ListNodes(cluster_pb2.ListNodesRequest())
            assert ei.value.code() == grpc.StatusCode.PERMISSION_DENIED
        async with grpcutil.insecure_channel(addr, credentials=creds("alice")) as ch:
            nodes = (await cluster_pb2_grpc.ClusterStub(ch).ListNodes(cluster_pb2.ListNodesRequest())).nodes
            assert [n.node for n in nodes] == ["n1"]
    finally:
        for a in agents:
            await a.close()
        await c.stop()


async def test_an_agent_reads_its_token_file_again_for_every_stream(tmp_path: Path) -> None:
    """A projected ServiceAccount token is rotated on disk: the next stream presents the new one."""
    c = await kit.start_collector(tmp_path, **_tokens(tmp_path))
    token_file = tmp_path / "projected"
    token_file.write_text("an-old-token")
    agent = _agent(kit.address(c), token_file=str(token_file))
    task = asyncio.create_task(agent.session.connection_loop())
    try:
        await kit.until(lambda: len(agent.session.retry_delays) >= 1, what="the old token refused")
        assert "n1" not in c.state.sessions
        token_file.write_text(AGENT)  # rotated
        await kit.until(lambda: "n1" in c.state.sessions, what="the agent back with the rotated token")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await c.stop()
