"""Access and limits against a real in-process collector over TCP: token, mutual TLS, rate limit,
target policy, hostile messages, Prometheus. Everything real except that agents run in-process."""

from __future__ import annotations

import asyncio
import logging
import math
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest

from cniscope.agent import batch_sealer, collector_session, sample_loop
from cniscope.agent.node_agent import NodeAgent
from cniscope.api.v1 import agent_pb2, agent_pb2_grpc, cluster_pb2, cluster_pb2_grpc, common_pb2
from cniscope.core import grpcutil, security
from cniscope.core.config import AgentConfig

sys.path.insert(0, str(Path(__file__).parents[1]))
import pipeline_kit as kit  # type: ignore[import-not-found]  # noqa: E402

TOKEN = "s3cret-token-for-tests"
AGENT_TOKEN = "another-s3cret-for-agents"


def _agent(c: Any, node: str = "n1", **kw: Any) -> NodeAgent:
    cfg = AgentConfig(node=node, collector=kit.address(c), host_ip="198.18.0.11", pod_ip="198.19.1.11",
                      sample_interval=0.2, backoff_initial=0.1, backoff_max=0.5, **kw)
    return NodeAgent(cfg)


async def _list(address: str, md: tuple[tuple[str, str], ...] = (),
                creds: grpc.ChannelCredentials | None = None) -> list[cluster_pb2.NodeState]:
    async with grpcutil.insecure_channel(address, credentials=creds) as ch:
        resp = await cluster_pb2_grpc.ClusterStub(ch).ListNodes(cluster_pb2.ListNodesRequest(), metadata=md, timeout=5)
        return list(resp.nodes)


# ---- token ----------------------------------------------------------------------------------------
async def test_token_refuses_missing_and_wrong_and_admits_right(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tok, atok = tmp_path / "token", tmp_path / "agent-token"
    tok.write_text(TOKEN + "\n")
    atok.write_text(AGENT_TOKEN + "\n")
    c = await kit.start_collector(tmp_path, token_file=str(tok), agent_token_file=str(atok))
    agent = _agent(c, token_file=str(atok))
    task = asyncio.create_task(agent.run())
    try:
        await kit.until(lambda: "n1" in c.state.sessions, what="agent with the token to connect")
        for md in ((), security.bearer_metadata("wrong"), (("authorization", TOKEN),)):
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await _list(kit.address(c), md)
            assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED
        nodes = await _list(kit.address(c), security.bearer_metadata(TOKEN))
        assert [n.node for n in nodes] == ["n1"]
        # an agent without the token is refused too, and keeps retrying
        intruder = _agent(c, node="n2")
        itask = asyncio.create_task(intruder.session.connection_loop())
        with caplog.at_level(logging.WARNING, logger="cniscope.agent"):
            await kit.until(lambda: len(intruder.session.retry_delays) >= 6, what="intruder retries")
        itask.cancel()
        # each refusal is read as the collector sent it (the agent waits for the stream's response
        # headers before its Hello), never as a client-side INTERNAL
        reasons = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(reasons) >= 6
        assert all("refused by the collector (UNAUTHENTICATED: " in m for m in reasons), reasons
        assert "n2" not in c.state.nodes
        assert c.auth is not None
        assert c.auth.refused >= 5
        # health stays open for Kubernetes probes
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        async with grpcutil.insecure_channel(kit.address(c)) as ch:
            h = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""))
        assert h.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await c.stop()


# ---- mutual TLS -----------------------------------------------------------------------------------
def _write_pki(tmp: Path) -> tuple[dict[str, Path], Any]:
    ca, other = kit.make_ca("cniscope test CA"), kit.make_ca("some other CA")
    files: dict[str, bytes] = {"ca.pem": kit.pem(ca[1]), "other-ca.pem": kit.pem(other[1])}
    files["server.pem"], files["server.key"] = kit.issue(ca, "collector", server=True)
    files["client.pem"], files["client.key"] = kit.issue(ca, "alice", server=False)
    files["agent.pem"], files["agent.key"] = kit.issue(ca, "cniscope-agent:n1", server=False)
    files["rogue.pem"], files["rogue.key"] = kit.issue(other, "node1", server=False)
    out = {}
    for name, data in files.items():
        (tmp / name).write_bytes(data)
        out[name] = tmp / name
    return out, ca


async def test_mutual_tls_refuses_no_cert_and_wrong_ca_and_admits_the_right_one(tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    pki, ca = _write_pki(tmp_path)
    c = await kit.start_collector(tmp_path, tls_cert=str(pki["server.pem"]), tls_key=str(pki["server.key"]),
                                  tls_ca=str(pki["ca.pem"]))
    addr = kit.address(c)
    try:
        refused = {
            "no client cert": security.client_credentials(str(pki["ca.pem"])),
            "client cert from another CA": security.client_credentials(
                str(pki["ca.pem"]), str(pki["rogue.pem"]), str(pki["rogue.key"])),
            "server checked against the wrong CA": security.client_credentials(
                str(pki["other-ca.pem"]), str(pki["client.pem"]), str(pki["client.key"])),
        }
        for why, creds in refused.items():
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await _list(addr, creds=creds)
            assert ei.value.code() == grpc.StatusCode.UNAVAILABLE, why
        with pytest.raises(grpc.aio.AioRpcError):
            await _list(addr)  # plaintext against a TLS port
        good = security.client_credentials(str(pki["ca.pem"]), str(pki["client.pem"]), str(pki["client.key"]))
        assert await _list(addr, creds=good) == []

        # the agent rebuilds its channel when its certificate file changes
        monkeypatch.setattr(collector_session, "CERT_POLL_SECONDS", 0.1)
        agent = _agent(c, tls_ca=str(pki["ca.pem"]), tls_cert=str(pki["agent.pem"]), tls_key=str(pki["agent.key"]))
        task = asyncio.create_task(agent.run())
        await kit.until(lambda: "n1" in c.state.sessions, what="agent over mutual TLS")
        before = agent.reconnects
        cert, key = kit.issue(ca, "cniscope-agent:n1", server=False)
        pki["agent.key"].write_bytes(key)
        pki["agent.pem"].write_bytes(cert)
        await kit.until(lambda: agent.reconnects > before and agent.connected, what="channel rebuilt")
        await kit.until(lambda: "n1" in c.state.sessions, what="reconnected with the new certificate")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        await c.stop()


def _served_cn(port: int, pki: dict[str, Path]) -> str:
    """The common name of the certificate the collector presents to a new TLS connection."""
    import socket
    import ssl

    ctx = ssl.create_default_context(cafile=str(pki["ca.pem"]))
    ctx.load_cert_chain(str(pki["client.pem"]), str(pki["client.key"]))
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        cert = tls.getpeercert()
    assert cert is not None
    subject: Any = cert["subject"]  # ((("commonName", "collector"),), ...)
    return str(next(attr[1] for rdn in subject for attr in rdn if attr[0] == "commonName"))


async def test_collector_serves_a_rotated_certificate_to_new_connections(tmp_path: Path) -> None:
    """The collector's own certificate is rotated on disk: new connections get the new one without a
    restart, and an agent connected over the old one stays connected; a half-written rotation
    (an empty file) keeps the previous certificate in service."""
    pki, ca = _write_pki(tmp_path)
    c = await kit.start_collector(tmp_path, tls_cert=str(pki["server.pem"]), tls_key=str(pki["server.key"]),
                                  tls_ca=str(pki["ca.pem"]))
    port = int(kit.address(c).rsplit(":", 1)[1])
    agent = _agent(c, tls_ca=str(pki["ca.pem"]), tls_cert=str(pki["agent.pem"]), tls_key=str(pki["agent.key"]))
    task = asyncio.create_task(agent.run())
    try:
        await kit.until(lambda: "n1" in c.state.sessions, what="agent over mutual TLS")
        assert await asyncio.to_thread(_served_cn, port, pki) == "collector"
        pki["server.key"].write_bytes(b"")  # caught half-written
        assert await asyncio.to_thread(_served_cn, port, pki) == "collector"
        cert, key = kit.issue(ca, "collector-rotated", server=True)
        pki["server.key"].write_bytes(key)
        pki["server.pem"].write_bytes(cert)
        assert await asyncio.to_thread(_served_cn, port, pki) == "collector-rotated"
        good = security.client_credentials(str(pki["ca.pem"]), str(pki["client.pem"]), str(pki["client.key"]))
        assert await _list(kit.address(c), creds=good) != []
        assert agent.reconnects == 0  # the open stream kept its connection
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await c.stop()


# ---- limits and target policy ---------------------------------------------------------------------
async def test_hundred_runprobe_calls_in_one_second_are_shaped(tmp_path: Path) -> None:
    c = await kit.start_collector(tmp_path, probe_rate=5.0, probe_burst=20)
    codes: list[grpc.StatusCode] = []
    details: list[str] = []
    try:
        async with grpcutil.insecure_channel(kit.address(c)) as ch:
            stub = cluster_pb2_grpc.ClusterStub(ch)
            t0 = time.monotonic()
            for i in range(100):
                await asyncio.sleep(max(0.0, t0 + i / 100 - time.monotonic()))
                try:
                    async for _ in stub.RunProbe(common_pb2.ProbeRequest(kind="rtt", source_node="nobody",
                                                                         target_node="n2")):
                        pass
                except grpc.aio.AioRpcError as exc:
                    codes.append(exc.code())
                    details.append(exc.details() or "")
            elapsed = time.monotonic() - t0
    finally:
        await c.stop()
    limited = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
    admitted = codes.count(grpc.StatusCode.NOT_FOUND)  # got past the limiter, then: no such source node
    assert admitted + limited == 100
    assert 20 <= admitted <= 20 + math.ceil(5 * elapsed) + 1, (admitted, elapsed)
    msg = next(d for d, cd in zip(details, codes, strict=True) if cd == grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert "rate limit" in msg
    assert "5/s" in msg


@pytest.mark.parametrize("target", ["169.254.169.254", "[::ffff:169.254.169.254]", "0xa9fea9fe", "2852039166",
                                    "127.0.0.1", "localhost", "fe80::1", "10.9.9.9"])
async def test_forbidden_targets_never_reach_an_agent(tmp_path: Path, target: str) -> None:
    c = await kit.start_collector(tmp_path)
    agent = _agent(c)
    task = asyncio.create_task(agent.run())
    try:
        await kit.until(lambda: "n1" in c.state.sessions, what="agent")
        async with grpcutil.insecure_channel(kit.address(c)) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                async for _ in cluster_pb2_grpc.ClusterStub(ch).RunProbe(common_pb2.ProbeRequest(
                        kind="rtt", source_node="n1", target_address=target)):
                    pass
        assert ei.value.code() == grpc.StatusCode.PERMISSION_DENIED, ei.value.details()
        assert not c.dispatcher.pending
        assert agent.last_results == {}  # no command reached the agent
        assert any("refused probe target" in e.message for e in c.state.recent_logs)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await c.stop()


# ---- hostile messages -----------------------------------------------------------------------------
async def _raw_session(address: str, msgs: list[agent_pb2.AgentMessage],
                       replies: list[agent_pb2.CollectorMessage] | None = None) -> grpc.aio.AioRpcError | None:
    async with grpcutil.insecure_channel(address) as ch:
        call = agent_pb2_grpc.AgentHubStub(ch).Connect(iter(msgs), timeout=5)
        try:
            async for m in call:
                if replies is not None:
                    replies.append(m)
        except grpc.aio.AioRpcError as exc:
            return exc
    return None


def _hello(node: str, boot: str = "raw-boot", **kw: Any) -> agent_pb2.AgentMessage:
    return agent_pb2.AgentMessage(hello=agent_pb2.Hello(node=node, boot_id=boot, host_ip="198.18.0.50",
                                                        time_unix_nano=time.time_ns(), **kw))


def _batch(boot: str = "raw-boot", seq: int = 1, **kw: Any) -> agent_pb2.AgentMessage:
    return agent_pb2.AgentMessage(batch=agent_pb2.Batch(boot_id=boot, seq=seq, time_unix_nano=time.time_ns(), **kw))


async def test_hostile_messages_are_refused_and_others_keep_being_served(tmp_path: Path) -> None:
    c = await kit.start_collector(tmp_path, max_message_bytes=256 * 1024)
    good = _agent(c)
    task = asyncio.create_task(good.run())
    addr = kit.address(c)
    try:
        await kit.until(lambda: "n1" in c.state.sessions, what="the honest agent")
        bad_caps = agent_pb2.AgentMessage(hello=agent_pb2.Hello(node="x2", boot_id="b", host_ip="198.18.0.50"))
        bad_caps.hello.capabilities.items.add(name="bbr", state=42)
        cases: dict[str, tuple[list[agent_pb2.AgentMessage], grpc.StatusCode]] = {
            "oversize": ([_hello("x1"), _batch(samples=[common_pb2.Sample(name="big", value=1.0,
                                                                            labels={"k": "v" * 200})] * 2000)],
                         grpc.StatusCode.RESOURCE_EXHAUSTED),
            "claims a connected node's name": ([_hello("n1", boot="impostor")], grpc.StatusCode.ALREADY_EXISTS),
            "unknown enum value": ([bad_caps], grpc.StatusCode.INVALID_ARGUMENT),
            "empty node name": ([_hello("")], grpc.StatusCode.INVALID_ARGUMENT),
            "huge node name": ([_hello("n" * 10_000)], grpc.StatusCode.INVALID_ARGUMENT),
            "batch before hello": ([_batch()], grpc.StatusCode.FAILED_PRECONDITION),
            "metadata address as host_ip": ([agent_pb2.AgentMessage(hello=agent_pb2.Hello(
                node="x5", boot_id="b", host_ip="169.254.169.254"))], grpc.StatusCode.PERMISSION_DENIED),
        }
        for why, (msgs, code) in cases.items():
            seq_before = c.state.nodes["n1"].last_seq
            err = await _raw_session(addr, msgs)
            assert err is not None, why
            assert err.code() == code, f"{why}: {err.code()} {err.details()}"
            # the honest agent is still connected and its batches still land
            await kit.until(lambda s=seq_before: c.state.nodes["n1"].last_seq > s, what=f"n1 after {why}")
            assert "n1" in c.state.sessions
        # a batch that fails validation gets a typed refusal naming it; the stream carries on
        bad_batches = {
            "NaN sample": (_hello("x3"), _batch(seq=1, samples=[common_pb2.Sample(name="cpu", value=math.nan)])),
            "negative figure": (_hello("x4"), _batch(seq=1, probe_results=[common_pb2.ProbeResult(
                probe_id="p1", kind="rtt", figures={"p50_us": -1.0})])),
        }
        for why, (hello, bad) in bad_batches.items():
            replies: list[agent_pb2.CollectorMessage] = []
            good_batch = _batch(seq=2, samples=[common_pb2.Sample(name="cpu", value=1.0)])
            err = await _raw_session(addr, [hello, bad, good_batch], replies)
            assert err is None, f"{why}: {err}"
            refusals = [m.refused for m in replies if m.WhichOneof("body") == "refused"]
            assert [(r.boot_id, r.seq, r.code) for r in refusals] == [("raw-boot", 1, "INVALID_ARGUMENT")], why
            acks = [m.ack.seq for m in replies if m.WhichOneof("body") == "ack"]
            assert acks[-1:] == [2], f"{why}: the next batch is still stored and acked ({acks})"
        assert c.state.nodes["n1"].boot_id == good.boot_id
        logged = " ".join(e.message for e in c.state.recent_logs)
        for phrase in ("refused hello", "refused a second agent claiming node n1", "refused batch"):
            assert phrase in logged
        assert c.counters.refused >= 7
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await c.stop()


async def test_clock_off_by_more_than_50ms_is_flagged_and_logged(tmp_path: Path) -> None:
    c = await kit.start_collector(tmp_path)
    try:
        async with grpcutil.insecure_channel(kit.address(c)) as ch:
            q: asyncio.Queue[agent_pb2.AgentMessage | None] = asyncio.Queue()

            async def gen() -> Any:
                while (m := await q.get()) is not None:
                    yield m

            call = agent_pb2_grpc.AgentHubStub(ch).Connect(gen())
            ahead = 200_000_000  # 200 ms fast
            await q.put(agent_pb2.AgentMessage(hello=agent_pb2.Hello(node="skewy", boot_id="b1",
                                                                     time_unix_nano=time.time_ns() + ahead)))
            for seq in range(1, 4):
                await q.put(_batch("b1", seq, samples=[common_pb2.Sample(name="x", value=1.0)]))
                await asyncio.sleep(0.02)
            for m in (await call.read(), await call.read(), await call.read()):
                assert isinstance(m, agent_pb2.CollectorMessage)
            st = c.state.nodes["skewy"]
            await kit.until(lambda: st.last_seq == 3, what="3 batches")
            # _batch stamps the true time; a real fast clock stamps every batch ahead
            sent = time.time_ns()
            await q.put(agent_pb2.AgentMessage(batch=agent_pb2.Batch(boot_id="b1", seq=4, time_unix_nano=sent + ahead)))
            await kit.until(lambda: st.last_seq == 4, what="the fast batch")
            # the collector received the batch between ``sent`` and now: the skew it sees is the
            # 200 ms minus that one-way delay, never more
            transit = time.time_ns() - sent
            c.state.settle()  # as every reader of node state does
            assert st.clock_skewed
            assert (ahead - transit) / 1e6 - 0.001 <= st.clock_skew_ms <= ahead / 1e6 + 0.001, transit
            assert any("clock off by +" in e.message and e.node == "skewy" for e in c.state.recent_logs)
            await q.put(None)
            call.cancel()
        db = c.store.conn.execute("SELECT agent_ns - received_ns FROM batches WHERE node='skewy' AND seq=4").fetchone()
        assert ahead - transit <= db[0] <= ahead  # receive time is stored beside the agent's timestamp
    finally:
        await c.stop()


# ---- Prometheus -----------------------------------------------------------------------------------
def _scrape(port: int, openmetrics: bool) -> tuple[str, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if openmetrics:
        req.add_header("Accept", "application/openmetrics-text; version=1.0.0")
    with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - loopback only
        return resp.headers["Content-Type"], resp.read().decode()


async def test_agent_and_collector_serve_metrics_with_openmetrics_negotiation(tmp_path: Path) -> None:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    cport, aport = kit.free_port(), kit.free_port()
    c = await kit.start_collector(tmp_path, metrics_listen=f"127.0.0.1:{cport}")
    agent = _agent(c, metrics_listen=f"127.0.0.1:{aport}")
    agent.spool.dropped = 3  # as if the bound had forced three out before
    task = asyncio.create_task(agent.run())
    try:
        await kit.until(lambda: "n1" in c.state.sessions and c.state.nodes["n1"].last_seq >= 3, what="batches")
        agent.probes.last_results[("rtt", "n2", "pod")] = common_pb2.ProbeResult(
            kind="rtt", target_node="n2", path="pod", ok=True, figures={"p99_us": 61.0})
        out: dict[str, dict[str, list[Any]]] = {}
        for who, port in (("collector", cport), ("agent", aport)):
            ctype, body = await asyncio.to_thread(_scrape, port, True)
            assert ctype.startswith("application/openmetrics-text"), ctype
            assert body.rstrip().endswith("# EOF")
            families = text_string_to_metric_families(body)  # type: ignore[no-untyped-call]
            out[who] = {f.name: f.samples for f in families}
            ctype, body = await asyncio.to_thread(_scrape, port, False)
            assert ctype.startswith("text/plain")
        col, ag = out["collector"], out["agent"]
        assert col["cniscope_node_connected"][0].labels == {"node": "n1"}
        assert col["cniscope_node_connected"][0].value == 1
        assert col["cniscope_node_spool_dropped"][0].value == 3
        assert {s.labels["node"] for s in col["cniscope_agent_rss_bytes"]} == {"n1"}
        assert col["cniscope_agent_rss_bytes"][0].value > 1_000_000
        assert "cniscope_unit_duration_seconds" in col
        assert col["cniscope_collector_batches"][0].value >= 3
        assert ag["cniscope_agent_spool_dropped"][0].value == 3
        assert ag["cniscope_agent_connected"][0].value == 1
        assert "cniscope_agent_spool_batches" in ag
        assert ag["cniscope_probe_rtt_p99_seconds"][0].value == pytest.approx(61e-6)  # base units: p99_us → s
        assert ag["cniscope_probe_rtt_p99_seconds"][0].labels["path"] == "pod"
        assert "cniscope_unit_success" in ag
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await c.stop()


def test_agent_refuses_the_pure_python_protobuf_backend() -> None:
    env = {"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "cniscope.cli", "agent", "--collector", "127.0.0.1:1"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode != 0
    assert "pure-Python protobuf backend" in r.stderr, r.stderr[-1000:]
    assert "Traceback" not in r.stderr


async def test_cli_reaches_a_tls_and_token_protected_collector_through_its_environment(tmp_path: Path) -> None:
    pki, _ = _write_pki(tmp_path)
    tok = tmp_path / "token"
    tok.write_text(TOKEN)
    c = await kit.start_collector(tmp_path, tls_cert=str(pki["server.pem"]), tls_key=str(pki["server.key"]),
                                  tls_ca=str(pki["ca.pem"]), token_file=str(tok))
    env = {"PATH": "/usr/bin:/bin", "CNISCOPE_TLS_CA": str(pki["ca.pem"]),
           "CNISCOPE_TLS_CERT": str(pki["client.pem"]), "CNISCOPE_TLS_KEY": str(pki["client.key"])}

    async def nodes(extra: dict[str, str]) -> tuple[int, str]:
        p = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cniscope.cli", "nodes", "--collector", kit.address(c), "-o", "json",
            env={**env, **extra}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(p.communicate(), 60)
        return p.returncode or 0, (out + err).decode()

    try:
        rc, out = await nodes({"CNISCOPE_TOKEN_FILE": str(tok)})
        assert rc == 0, out
        assert out.strip() == "[]"
        rc, out = await nodes({})  # TLS right, token missing
        assert rc != 0
        assert "missing bearer token" in out
        rc, out = await nodes({"CNISCOPE_TOKEN_FILE": str(tok), "CNISCOPE_TLS_CERT": "", "CNISCOPE_TLS_KEY": ""})
        assert rc != 0  # no client certificate
        assert "Traceback" not in out
    finally:
        await c.stop()


class _FastClock:
    """The ``time`` module as seen by an agent whose wall clock runs 200 ms ahead."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def time_ns() -> int:
        return time.time_ns() + 200_000_000


async def test_agent_measures_its_clock_offset_over_the_welcome_round_trip(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    c = await kit.start_collector(tmp_path)
    honest, fast = _agent(c, node="honest"), _agent(c, node="fast")
    tasks = [asyncio.create_task(honest.run())]
    try:
        await kit.until(lambda: "honest" in c.state.sessions and c.state.nodes["honest"].last_seq >= 2,
                        what="honest agent")
        for module in (collector_session, batch_sealer, sample_loop):  # Hello and Welcome, batches, samples
            monkeypatch.setattr(module, "time", _FastClock())
        tasks.append(asyncio.create_task(fast.run()))
        await kit.until(lambda: "fast" in c.state.sessions and c.state.nodes["fast"].last_seq >= 2, what="fast agent")
        assert fast.session.clock_rtt_ms is not None
        bound = fast.session.clock_rtt_ms / 2 + 0.5  # the true offset lies within half the round trip
        assert abs(fast.session.clock_offset_ms - 200) <= bound
        c.state.settle()  # as every reader of node state does
        assert c.state.nodes["fast"].clock_skewed
        assert abs(c.state.nodes["fast"].clock_skew_ms - 200) <= bound
        assert not c.state.nodes["honest"].clock_skewed
        assert abs(c.state.nodes["honest"].clock_skew_ms) < 20
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await c.stop()
