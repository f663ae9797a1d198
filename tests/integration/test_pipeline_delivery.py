"""Delivery against a real in-process collector over TCP: backoff, spool bound, disk spool replay across
an agent restart, keepalive policy, and a fuzzing client that must never bring the collector down."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cniscope.agent.node_agent import NodeAgent
from cniscope.api.v1 import agent_pb2, agent_pb2_grpc, cluster_pb2, cluster_pb2_grpc, common_pb2
from cniscope.collector.auth import Authenticator, AuthInterceptor
from cniscope.collector.cluster_service import ClusterService, add_cluster
from cniscope.collector.server import Collector
from cniscope.core import grpcutil
from cniscope.core.config import AgentConfig, CollectorConfig

sys.path.insert(0, str(Path(__file__).parents[1]))
import pipeline_kit as kit  # type: ignore[import-not-found]  # noqa: E402


def _agent(address: str, node: str = "n1", **kw: Any) -> NodeAgent:
    base: dict[str, Any] = {"host_ip": "198.18.0.11", "sample_interval": 0.2, "backoff_initial": 0.1,
                            "backoff_max": 0.5}
    base.update(kw)
    return NodeAgent(AgentConfig(node=node, collector=address, **base))


def _produce(agent: NodeAgent, n: int) -> None:
    """Seal ``n`` batches by hand (what the sample loop does every interval)."""
    for _ in range(n):
        agent.sealer.add_samples([common_pb2.Sample(name="x", value=float(agent.sealer.seq + 1))])
        agent.sealer.seal()


class _Recording(AuthInterceptor):
    """Refuses every call (nobody has a token) and records when each node knocked."""

    def __init__(self) -> None:
        super().__init__(Authenticator("nobody-has-this", "nor-this"))
        self.knocks: dict[str, list[float]] = {}

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        md = dict(details.invocation_metadata or ())
        node = md.get("x-cniscope-node")
        if isinstance(node, str):
            self.knocks.setdefault(node, []).append(time.monotonic())
        return await super().intercept_service(continuation, details)


async def test_retries_follow_the_schedule_and_twenty_agents_do_not_retry_in_lockstep(tmp_path: Path) -> None:
    port = kit.free_port()
    col = Collector(CollectorConfig(db=str(tmp_path / "c.db"), listen=f"127.0.0.1:{port}"))
    rec = _Recording()
    col.auth = rec
    await col.start()
    initial, factor, cap, jitter = 0.05, 1.6, 0.8, 0.2
    agents = [_agent(f"127.0.0.1:{port}", f"a{i:02d}", backoff_initial=initial, backoff_factor=factor,
                     backoff_max=cap, backoff_jitter=jitter) for i in range(20)]
    tasks = [asyncio.create_task(a.session.connection_loop()) for a in agents]
    try:
        await kit.until(lambda: all(len(rec.knocks.get(a.cfg.node, [])) >= 9 for a in agents), within=30,
                        what="nine attempts from every agent")
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await col.stop()
    late: list[float] = []
    for a in agents:
        knocks = rec.knocks[a.cfg.node]
        for i, d in enumerate(a.session.retry_delays[:8]):
            base = min(cap, initial * factor**i)
            assert base * (1 - jitter) - 1e-9 <= d <= base * (1 + jitter) + 1e-9, (a.cfg.node, i, d)
            gap = knocks[i + 1] - knocks[i]
            assert d <= gap <= d + 2.0, (a.cfg.node, i, d, gap)  # the wait really happened, and no longer
            late.append(gap - d)
    # a busy host delays a wake-up now and then; a wait that is longer by design delays them all
    assert statistics.median(late) < 0.25, sorted(late)[::16]
    # lock-step would put every agent's 9th attempt at the same instant; jitter spreads them out
    ninth = [rec.knocks[a.cfg.node][8] for a in agents]
    assert statistics.pstdev(ninth) > 0.03
    assert len({round(t, 2) for t in ninth}) >= 10
    assert len({tuple(round(d, 4) for d in a.session.retry_delays[:8]) for a in agents}) == 20


async def test_spool_bound_drops_are_counted_and_reported(tmp_path: Path) -> None:
    port = kit.free_port()  # nothing listens yet: the collector is down
    agent = _agent(f"127.0.0.1:{port}", spool_max_batches=5)
    _produce(agent, 23)
    assert agent.spool.depth == 5
    assert agent.spool.dropped == 23 - 5
    col = Collector(CollectorConfig(db=str(tmp_path / "c.db"), listen=f"127.0.0.1:{port}"))
    await col.start()
    task = asyncio.create_task(agent.session.connection_loop())
    try:
        await kit.until(lambda: agent.spool.depth == 0 and "n1" in col.state.sessions, what="drain")
        st = col.state.nodes["n1"]
        assert st.spool_dropped == 18
        assert st.seq_gaps == 18
        seqs = [r[0] for r in col.store.conn.execute("SELECT seq FROM batches WHERE node='n1' ORDER BY seq")]
        assert seqs == [19, 20, 21, 22, 23]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await col.stop()


async def test_agent_restart_replays_its_disk_spool_under_the_old_boot_id(tmp_path: Path) -> None:
    port = kit.free_port()
    spool = tmp_path / "agent" / "spool.seg"
    first = _agent(f"127.0.0.1:{port}", spool_path=str(spool))
    _produce(first, 10)  # collector down: all ten wait on disk
    old_boot = first.boot_id
    del first  # the process dies without a goodbye
    second = _agent(f"127.0.0.1:{port}", spool_path=str(spool))
    assert second.boot_id != old_boot
    assert second.spool.recovered == 10
    _produce(second, 3)
    col = Collector(CollectorConfig(db=str(tmp_path / "c.db"), listen=f"127.0.0.1:{port}"))
    await col.start()
    task = asyncio.create_task(second.session.connection_loop())
    try:
        await kit.until(lambda: second.spool.depth == 0, what="both boots delivered")
        rows = col.store.conn.execute("SELECT boot_id, COUNT(*), COUNT(DISTINCT seq), MIN(seq), MAX(seq) "
                                      "FROM batches WHERE node='n1' GROUP BY boot_id").fetchall()
        assert sorted(rows) == sorted([(old_boot, 10, 10, 1, 10), (second.boot_id, 3, 3, 1, 3)])
        assert col.state.nodes["n1"].boot_id == second.boot_id
        assert col.state.nodes["n1"].last_seq == 3  # the replayed boot does not disturb the live one
        assert any("replays 1 earlier boot" in e.message for e in col.state.recent_logs)
        # nothing comes back a third time
        assert _agent(f"127.0.0.1:{port}", spool_path=str(spool)).spool.recovered == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await col.stop()


async def test_fastest_valid_keepalive_never_gets_too_many_pings(tmp_path: Path) -> None:
    """Pings every 5 s (the server's floor) on an idle stream for 12 s: no GOAWAY. The same client
    against a server with a stricter policy is told too_many_pings — so the check can fail."""
    strict_port = kit.free_port()
    strict = grpc.aio.server(options=[("grpc.http2.min_recv_ping_interval_without_data_ms", 20_000),
                                      ("grpc.http2.max_ping_strikes", 1),
                                      ("grpc.keepalive_permit_without_calls", 1)])
    col = await kit.start_collector(tmp_path)
    add_cluster(ClusterService(col.state, col.store, col.dispatcher, "strict"), strict)
    strict.add_insecure_port(f"127.0.0.1:{strict_port}")
    await strict.start()

    async def idle_watch(address: str) -> str:
        opts = grpcutil.client_options(keepalive_time=5.0, keepalive_timeout=5.0)
        async with grpcutil.insecure_channel(address, opts) as ch:
            call = cluster_pb2_grpc.ClusterStub(ch).Watch(cluster_pb2.WatchRequest(), timeout=12.5)
            try:
                async for _ in call:
                    pass
            except grpc.aio.AioRpcError as exc:
                return f"{exc.code().name} {exc.details()} {exc.debug_error_string()}"
            return "ended"

    try:
        ours, theirs = await asyncio.gather(idle_watch(kit.address(col)), idle_watch(f"127.0.0.1:{strict_port}"))
    finally:
        await strict.stop(0)
        await col.stop()
    assert ours.startswith("DEADLINE_EXCEEDED"), ours  # lived until our own deadline
    assert "too_many_pings" not in ours.lower()
    assert "too_many_pings" in theirs.lower() or "too many pings" in theirs.lower(), theirs


# ---- fuzzing --------------------------------------------------------------------------------------
_text = st.one_of(st.text(max_size=40), st.just(""), st.text(min_size=300, max_size=600),
                  st.sampled_from(["n1", "169.254.169.254", "0xa9fea9fe", "\x00", "node1"]))
_floats = st.floats(allow_nan=True, allow_infinity=True)
_sample = st.builds(common_pb2.Sample, name=_text, value=_floats,
                    labels=st.dictionaries(_text, _text, max_size=3), time_unix_nano=st.integers(-2**63, 2**63 - 1))
_result = st.builds(common_pb2.ProbeResult, probe_id=_text, kind=_text,
                    figures=st.dictionaries(_text, _floats, max_size=3))
_hello = st.builds(agent_pb2.Hello, node=_text, boot_id=_text, host_ip=_text, pod_ip=_text,
                   time_unix_nano=st.integers(-2**63, 2**63 - 1), replay_boot_ids=st.lists(_text, max_size=20))
_batch = st.builds(agent_pb2.Batch, boot_id=_text, seq=st.integers(0, 2**64 - 1),
                   time_unix_nano=st.integers(-2**63, 2**63 - 1), samples=st.lists(_sample, max_size=4),
                   probe_results=st.lists(_result, max_size=2))
_message = st.one_of(st.builds(agent_pb2.AgentMessage, hello=_hello), st.builds(agent_pb2.AgentMessage, batch=_batch),
                     st.builds(agent_pb2.AgentMessage, command_ack=st.builds(agent_pb2.CommandAck, command_id=_text)))
_stream = st.one_of(st.lists(_message, min_size=1, max_size=5),
                    st.lists(st.binary(max_size=200), min_size=1, max_size=3))


@pytest.fixture
def fuzz_target(tmp_path: Path) -> Any:
    loop = asyncio.new_event_loop()
    col = loop.run_until_complete(kit.start_collector(tmp_path))
    honest = _agent(kit.address(col), node="honest")
    task = loop.create_task(honest.run())
    loop.run_until_complete(kit.until(lambda: "honest" in col.state.sessions, what="honest agent"))
    yield loop, col
    task.cancel()
    loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
    loop.run_until_complete(col.stop())
    rest = asyncio.all_tasks(loop)
    for t in rest:
        t.cancel()
    if rest:  # gather() of nothing looks for a current event loop, and this thread has none
        loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


async def _send(address: str, stream: list[Any]) -> grpc.StatusCode:
    async with grpcutil.insecure_channel(address) as ch:
        if stream and isinstance(stream[0], bytes):  # raw bytes: not even a valid protobuf
            raw = ch.stream_stream("/cniscope.api.v1.AgentHub/Connect",
                                   request_serializer=lambda b: b, response_deserializer=lambda b: b)
            call: Any = raw(iter(stream), timeout=2)
        else:
            call = agent_pb2_grpc.AgentHubStub(ch).Connect(iter(stream), timeout=2)
        try:
            async for _ in call:
                pass
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stream=_stream)
def test_fuzzing_client_never_brings_the_collector_down(fuzz_target: Any, stream: list[Any]) -> None:
    loop, col = fuzz_target
    code = loop.run_until_complete(_send(kit.address(col), stream))
    assert code != grpc.StatusCode.UNKNOWN  # an exception escaping a handler shows as UNKNOWN
    before = col.state.nodes["honest"].last_seq
    loop.run_until_complete(kit.until(lambda: col.state.nodes["honest"].last_seq > before, within=5,
                                      what="the honest agent's next batch"))
    assert "honest" in col.state.sessions


async def test_slow_collector_backpressure_is_absorbed_by_the_bounded_spool(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Every batch takes 1 s to commit (group commit shares no cost): acks trail, the spool fills
    to its bound and no further, drops are counted, and the sampler keeps its 100 ms cadence regardless."""
    col = await kit.start_collector(tmp_path)
    real: Callable[..., list[bool]] = col.store.commit_batches

    ending = threading.Event()  # set when the test is done: the collector stops without the wait

    def slow(items: list[Any], *rest: Any) -> list[bool]:
        ending.wait(1.0 * len(items))
        return real(items, *rest)

    monkeypatch.setattr(col.store, "commit_batches", slow)
    agent = _agent(kit.address(col), sample_interval=0.1, spool_max_batches=20)
    seal_times: list[float] = []
    sealed = agent.sealer.seal

    def timed_seal() -> agent_pb2.Batch | None:
        seal_times.append(time.monotonic())
        return sealed()

    monkeypatch.setattr(agent.sealer, "seal", timed_seal)
    task = asyncio.create_task(agent.run())
    depths: list[int] = []
    try:
        await kit.until(lambda: "n1" in col.state.sessions, what="agent")
        t_end = time.monotonic() + 5.0
        while time.monotonic() < t_end:
            depths.append(agent.spool.depth)
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        ending.set()
        await col.stop()
    assert max(depths) == 20  # filled to the bound, never beyond
    assert agent.spool.dropped > 0
    assert agent.spool.dropped + agent.spool.depth + agent.spool.acked_seq >= agent.sealer.seq  # every batch accounted
    gaps = [b - a for a, b in zip(seal_times[5:], seal_times[6:], strict=False)]
    assert 0.09 <= statistics.median(gaps) <= 0.15
    assert max(gaps) < 0.9  # the sampler never waited for the collector (a 1 s commit)


async def test_a_failed_commit_stops_acks_for_everything_after_it(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream reads ahead of its commits. When a transaction fails, the batches in it and every
    batch after it on that stream stay unacked (acks are cumulative), the stream ends, and the
    agent's resend after reconnecting stores them all exactly once."""
    col = await kit.start_collector(tmp_path)
    real: Callable[..., list[bool]] = col.store.commit_batches
    failed: list[int] = []

    def flaky(items: list[Any], *rest: Any) -> list[bool]:
        if not failed and any(b.seq >= 5 for _, b, _ in items):
            failed.extend(b.seq for _, b, _ in items)
            raise sqlite3.OperationalError("disk I/O error")
        return real(items, *rest)

    monkeypatch.setattr(col.store, "commit_batches", flaky)
    try:
        async with grpcutil.insecure_channel(kit.address(col)) as ch:
            out: asyncio.Queue[agent_pb2.AgentMessage | None] = asyncio.Queue()
            hello = agent_pb2.Hello(node="n1", boot_id="b1", host_ip="198.18.0.11")
            await out.put(agent_pb2.AgentMessage(hello=hello))
            for seq in range(1, 21):
                await out.put(agent_pb2.AgentMessage(batch=agent_pb2.Batch(
                    boot_id="b1", seq=seq, samples=[common_pb2.Sample(name="x", value=float(seq))])))

            async def gen() -> Any:
                while (m := await out.get()) is not None:
                    yield m

            acked = 0
            call = agent_pb2_grpc.AgentHubStub(ch).Connect(gen())
            with contextlib.suppress(grpc.aio.AioRpcError):
                async for msg in call:
                    if msg.WhichOneof("body") == "ack":
                        acked = max(acked, msg.ack.seq)
            assert failed, "the failing transaction never ran"
            assert acked < min(failed), f"acked {acked} although seq {min(failed)} was not durable"
            stored = {r[0] for r in col.store.conn.execute("SELECT seq FROM batches WHERE node='n1'")}
            assert stored.isdisjoint(failed)
            # the agent reconnects and resends everything after its last ack (some of it may be durable)
            out2 = [agent_pb2.AgentMessage(hello=hello)] + [
                agent_pb2.AgentMessage(batch=agent_pb2.Batch(boot_id="b1", seq=seq,
                                                              samples=[common_pb2.Sample(name="x", value=1.0)]))
                for seq in range(acked + 1, 21)]
            got = 0
            call2 = agent_pb2_grpc.AgentHubStub(ch).Connect(iter(out2))
            async for msg in call2:
                if msg.WhichOneof("body") == "ack":
                    got = max(got, msg.ack.seq)
                if got == 20:
                    call2.cancel()
                    break
        seqs = [r[0] for r in col.store.conn.execute("SELECT seq FROM batches WHERE node='n1' ORDER BY seq")]
        assert seqs == list(range(1, 21))
    finally:
        await col.stop()


async def test_a_batch_is_acked_only_once_it_is_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every commit takes 200 ms, so an ack sent before its batch's transaction ended would reach the
    agent while the batch is not yet in the database. At every ack, every batch up to the acked seq
    is already readable through another connection to the store's file."""
    col = await kit.start_collector(tmp_path)
    real: Callable[..., list[bool]] = col.store.commit_batches

    def slow(items: list[Any], *rest: Any) -> list[bool]:
        time.sleep(0.2)
        return real(items, *rest)

    monkeypatch.setattr(col.store, "commit_batches", slow)
    durable = sqlite3.connect(col.store.path)
    try:
        msgs = [agent_pb2.AgentMessage(hello=agent_pb2.Hello(node="n1", boot_id="b1", host_ip="198.18.0.11"))]
        msgs += [agent_pb2.AgentMessage(batch=agent_pb2.Batch(
            boot_id="b1", seq=seq, samples=[common_pb2.Sample(name="x", value=float(seq))])) for seq in range(1, 6)]
        acked: list[int] = []
        async with grpcutil.insecure_channel(kit.address(col)) as ch:
            async for msg in agent_pb2_grpc.AgentHubStub(ch).Connect(iter(msgs)):
                if msg.WhichOneof("body") != "ack":
                    continue
                stored = {seq for (seq,) in durable.execute("SELECT seq FROM batches WHERE node='n1' AND boot_id='b1'")}
                assert set(range(1, msg.ack.seq + 1)) <= stored, f"ack {msg.ack.seq} but only {sorted(stored)} stored"
                acked.append(msg.ack.seq)
        assert acked, "no ack came back"
        assert acked[-1] == 5
    finally:
        durable.close()
        await col.stop()


async def test_a_busy_stream_gets_cumulative_acks(tmp_path: Path) -> None:
    """300 batches sent 1 ms apart are all acked, in order, by far fewer ack messages than batches:
    a busy stream gets at most one cumulative ack per interval (each would otherwise be acked on
    its own); the collector's /metrics counters say the same."""
    col = await kit.start_collector(tmp_path)
    try:
        async with grpcutil.insecure_channel(kit.address(col)) as ch:
            async def gen() -> Any:
                yield agent_pb2.AgentMessage(hello=agent_pb2.Hello(node="n1", boot_id="b1", host_ip="198.18.0.11"))
                for seq in range(1, 301):
                    yield agent_pb2.AgentMessage(batch=agent_pb2.Batch(
                        boot_id="b1", seq=seq, samples=[common_pb2.Sample(name="x", value=float(seq))]))
                    await asyncio.sleep(0.001)

            acks: list[int] = []
            call = agent_pb2_grpc.AgentHubStub(ch).Connect(gen())
            async for msg in call:
                if msg.WhichOneof("body") == "ack":
                    acks.append(msg.ack.seq)
                    if msg.ack.seq == 300:
                        call.cancel()
                        break
        assert acks == sorted(acks)
        assert acks[-1] == 300
        assert len(acks) < 100, f"{len(acks)} ack messages for 300 batches"
        assert col.counters.batches == 300
        assert col.counters.acks == len(acks)
    finally:
        await col.stop()
