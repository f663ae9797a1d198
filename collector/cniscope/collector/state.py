"""Cluster state: who is connected, their latest figures, and the watchers that follow it."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cniscope.api.v1 import agent_pb2, cluster_pb2, common_pb2
from cniscope.collector.clockskew import SkewTracker
from cniscope.collector.series_cap import SeriesCap, series_key

__all__ = ["ClusterState", "Outgoing", "Session", "series_key"]
from cniscope.collector.target_trust import TargetTrust
from cniscope.collector.watchers import Watcher, Watchers

log = logging.getLogger("cniscope.collector")

PENDING_MAX = 64             # batches of one node held back from the latest-value state at most
COMPACT_FACTOR = 8           # a node's state is copied afresh after this many writes per figure it holds
PENDING_SAMPLES = 20_000     # and samples (about 2 MB of them): a flood of large batches is applied at once
OUTBOX_BYTES = 8 * 1024 * 1024   # encoded messages waiting for one agent to read them; beyond, it is cut off
PEERS_COALESCE_SMALL = 0.05   # seconds; small clusters see a newcomer almost at once
PEERS_COALESCE_LARGE = 1.0    # 64+ agents: at most one peer-table broadcast a second
CONNECTED = cluster_pb2.NODE_STATUS_CONNECTED
STALE = cluster_pb2.NODE_STATUS_STALE
GONE = cluster_pb2.NODE_STATUS_GONE


Outgoing = agent_pb2.CollectorMessage | bytes   # bytes: a CollectorMessage encoded once for many streams


@dataclass
class Session:
    node: str
    boot_id: str
    replay_boots: frozenset[str] = frozenset()   # earlier boots this agent replays from its spool
    outbox: asyncio.Queue[Outgoing] = field(
        default_factory=lambda: asyncio.Queue(maxsize=10_000))
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # the stream's writer has work: send or close
    inflight: int = 0                              # batches read but not yet committed
    inflight_bytes: int = 0                        # their encoded size
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    failure: BaseException | None = None           # a commit failed: nothing after it is acked
    acks: dict[str, int] = field(default_factory=dict)  # boot id → highest durable seq not yet acked

    outbox_bytes: int = 0                          # encoded size of what waits in the outbox

    def send(self, msg: Outgoing) -> bool:
        """Queue a message (or its encoding, when one encoding goes to many streams) for the agent.
        An agent that leaves ``OUTBOX_BYTES`` unread is cut off (False)."""
        size = len(msg) if isinstance(msg, bytes) else msg.ByteSize()
        if self.outbox_bytes + size > OUTBOX_BYTES:
            self.close()
            return False
        try:
            self.outbox.put_nowait(msg)
        except asyncio.QueueFull:
            return False
        self.outbox_bytes += size
        self.wake.set()
        return True

    def take(self) -> Outgoing:
        """The next message for the agent (the outbox must not be empty)."""
        msg = self.outbox.get_nowait()
        self.outbox_bytes -= len(msg) if isinstance(msg, bytes) else msg.ByteSize()
        return msg

    def ack(self, boot_id: str, seq: int) -> None:
        """Acks are cumulative per boot: only the highest waiting one is sent."""
        if seq > self.acks.get(boot_id, 0):
            self.acks[boot_id] = seq
        self.wake.set()

    def take_acks(self) -> list[agent_pb2.CollectorMessage]:
        out = [agent_pb2.CollectorMessage(ack=agent_pb2.Ack(boot_id=b, seq=q)) for b, q in self.acks.items()]
        self.acks.clear()
        return out

    def close(self) -> None:
        self.closed.set()
        self.wake.set()


class ClusterState:
    def __init__(self, stale_after: float = 15.0, trust: TargetTrust | None = None) -> None:
        self.trust = trust or TargetTrust("198.18.0.0/15")   # which announced addresses are probe targets
        self.nodes: dict[str, cluster_pb2.NodeState] = {}
        self.sessions: dict[str, Session] = {}
        self.watchers = Watchers()
        self.stale_after = stale_after
        self.peer_version = 0
        self.recent_logs: list[common_pb2.LogEvent] = []
        self.skew = SkewTracker()
        self._peers_pending = False
        self.latest_results: dict[tuple[str, str, str, str], common_pb2.ProbeResult] = {}
        self.latest: dict[str, dict[str, common_pb2.Sample]] = {}  # node → series key → latest sample
        self._pending: dict[str, list[tuple[agent_pb2.Batch, int]]] = {}  # batches not yet in figures/latest
        self._pending_samples: dict[str, int] = {}
        self._writes: dict[str, int] = {}                 # figure writes since the node state was copied
        self.series_cap = SeriesCap()                     # bounds each node's live figures
        self.storage: cluster_pb2.StorageStatus | None = None   # the database's size, once measured

    # ---- watchers ----------------------------------------------------------------------------
    def subscribe(self, include_samples: bool = False) -> Watcher:
        self.settle()  # the snapshot a new watcher is sent is current
        w = Watcher(include_samples)
        self.watchers.add(w)
        return w

    def unsubscribe(self, w: Watcher) -> None:
        self.watchers.discard(w)

    def publish(self, ev: cluster_pb2.ClusterEvent) -> None:
        self.watchers.publish(ev)

    def set_storage(self, db_bytes: int, max_bytes: int, time_to_full_s: float) -> None:
        """The database's size, bound and time to full (``inf``: not growing) as last measured;
        watchers hear of every change."""
        st = cluster_pb2.StorageStatus(db_bytes=db_bytes, max_bytes=max_bytes)
        if math.isfinite(time_to_full_s):
            st.time_to_full_seconds = round(time_to_full_s)
        if st != self.storage:
            self.storage = st
            self.publish(cluster_pb2.ClusterEvent(storage=st))

    def log_event(self, level: str, message: str, node: str = "") -> common_pb2.LogEvent:
        ev = common_pb2.LogEvent(time_unix_nano=time.time_ns(), level=level, node=node, message=message)
        self.recent_logs.append(ev)
        del self.recent_logs[:-500]
        getattr(log, "warning" if level == "warning" else "error" if level == "error" else "info")(
            "%s%s", f"{node}: " if node else "", message)
        self.publish(cluster_pb2.ClusterEvent(log=ev))
        return ev

    # ---- nodes -------------------------------------------------------------------------------
    def connect(self, hello: agent_pb2.Hello, session: Session, now_ns: int) -> cluster_pb2.NodeState:
        self.settle(hello.node)  # the previous session's last batches count before the state is replaced
        prev = self.nodes.get(hello.node)
        st = cluster_pb2.NodeState(
            node=hello.node, status=CONNECTED, boot_id=hello.boot_id, agent_version=hello.agent_version,
            host_ip=hello.host_ip, pod_ip=hello.pod_ip, last_seen_unix_nano=now_ns,
            connected_since_unix_nano=now_ns, spool_dropped=hello.spool_dropped,
            clock_skew_ms=round((hello.time_unix_nano - now_ns) / 1e6, 3) if hello.time_unix_nano else 0.0,
            labels=dict(hello.labels),
        )
        if hello.HasField("capabilities"):
            st.capabilities.CopyFrom(hello.capabilities)
        st.boots = 1
        self.skew.reset(hello.node)
        if prev is not None:
            st.reconnects = prev.reconnects + 1
            st.boots = max(prev.boots, 1)
            st.seq_gaps = prev.seq_gaps
            if prev.boot_id == hello.boot_id:
                st.figures.update(prev.figures)
                st.last_seq = prev.last_seq
            else:
                st.boots += 1
                self.log_event("warning", f"agent restarted: boot {prev.boot_id[:8]} (last seq {prev.last_seq}) "
                                          f"→ {hello.boot_id[:8]}", hello.node)
        if hello.time_unix_nano:
            st.clock_skew_ms = self.skew.observe(hello.node, hello.time_unix_nano, now_ns)
            st.clock_skewed = self.skew.flagged(st.clock_skew_ms)
            if st.clock_skewed:
                self.log_event("warning", f"clock off by {st.clock_skew_ms:+.1f} ms "
                                          f"(limit ±{self.skew.limit_ms:.0f} ms)", hello.node)
        self.nodes[hello.node] = st
        self.sessions[hello.node] = session
        self.watchers.publish_node(st)
        session.send(agent_pb2.CollectorMessage(peers=self.peer_table()))  # the newcomer learns at once
        self.schedule_peers()
        return st

    def disconnect(self, session: Session) -> None:
        if self.sessions.get(session.node) is not session:
            return
        del self.sessions[session.node]
        st = self.nodes.get(session.node)
        if st is not None:
            st.status = GONE
            self.watchers.publish_node(st)
        self.schedule_peers()

    def peer_table(self) -> common_pb2.PeerTable:
        self.peer_version += 1
        vouched: Callable[[str, str], bool] = self.trust.vouched
        peers = [common_pb2.Peer(node=n, host_ip=st.host_ip if vouched(n, st.host_ip) else "",
                                 pod_ip=st.pod_ip if vouched(n, st.pod_ip) else "")
                 for n, st in sorted(self.nodes.items()) if n in self.sessions]
        return common_pb2.PeerTable(peers=peers, version=self.peer_version)

    def on_probe_result(self, r: common_pb2.ProbeResult) -> None:
        self.latest_results[(r.kind, r.source_node, r.target_node or r.target_address, r.path)] = r
        self.publish(cluster_pb2.ClusterEvent(probe_result=r))

    def schedule_peers(self) -> None:
        """Coalesce peer-table broadcasts: a rolling start of N agents costs O(N) tables, not O(N²)."""
        if self._peers_pending:
            return
        self._peers_pending = True
        delay = PEERS_COALESCE_SMALL if len(self.sessions) < 64 else PEERS_COALESCE_LARGE

        def fire() -> None:
            self._peers_pending = False
            self.broadcast_peers()

        try:
            asyncio.get_running_loop().call_later(delay, fire)
        except RuntimeError:  # no loop (unit use): broadcast now
            fire()

    def flush_peers_to(self, session: Session) -> None:
        """Before a command goes out while a coalesced broadcast is still pending, the receiving agent
        gets the current table first: a probe to a node that joined a moment ago must not fail on the
        agent's stale view of its peers."""
        if self._peers_pending:
            session.send(agent_pb2.CollectorMessage(peers=self.peer_table()))

    def broadcast_peers(self) -> None:
        wire = agent_pb2.CollectorMessage(peers=self.peer_table()).SerializeToString()  # once for all
        for s in self.sessions.values():
            s.send(wire)

    def on_batch(self, node: str, batch: agent_pb2.Batch, now_ns: int) -> None:
        st = self.nodes.get(node)
        if st is None:
            return
        st.last_seen_unix_nano = now_ns
        if st.status != CONNECTED and node in self.sessions:
            st.status = CONNECTED
        if batch.boot_id != st.boot_id:  # an earlier boot's batch replayed from the agent's disk spool
            return
        if batch.seq > st.last_seq + 1:
            st.seq_gaps += batch.seq - st.last_seq - 1
        st.last_seq = max(st.last_seq, batch.seq)
        st.spool_dropped = max(st.spool_dropped, batch.spool_dropped)
        pend = self._pending.setdefault(node, [])
        pend.append((batch, now_ns))
        held = self._pending_samples[node] = self._pending_samples.get(node, 0) + len(batch.samples)
        if self.watchers or len(pend) >= PENDING_MAX or held >= PENDING_SAMPLES:
            self.settle(node)

    def settle(self, node: str | None = None) -> None:
        """Apply the batches received since the last settle to the latest-value state (figures, the
        latest sample per series, clock skew). Acks never wait for this: it runs when someone reads
        the state, when someone watches (every batch, so watchers see each one), and once a second
        from the sweep. Of several pending batches the newest defines every series whose name it
        carries; older ones contribute only names it lacks (a sampler with a longer interval)."""
        self.settle_nodes([node] if node is not None else list(self._pending))

    def settle_nodes(self, nodes: list[str]) -> None:
        for n in nodes:
            pend = self._pending.pop(n, None)
            self._pending_samples.pop(n, None)
            st = self.nodes.get(n)
            if pend and st is not None:
                self._apply(n, st, pend)

    def pending_chunks(self, size: int) -> list[list[str]]:
        """The nodes with batches not yet applied, in chunks of ``size``."""
        names = list(self._pending)
        return [names[i:i + size] for i in range(0, len(names), size)]

    def _apply(self, node: str, st: cluster_pb2.NodeState, pend: list[tuple[agent_pb2.Batch, int]]) -> None:
        # the newest batch that carries samples (the agent puts its measured offset in every one)
        newest = next((b for b, _ in reversed(pend) if b.samples), pend[-1][0])
        measured = next((s.value for s in newest.samples if s.name == "agent_clock_offset_ms"), None)
        if measured is not None:  # the agent's round-trip measurement
            skew: float | None = round(measured, 3)
        else:  # the one-way estimate, fed every batch's (agent time, receive time)
            skew = None
            for b, t in pend:
                if b.time_unix_nano:
                    skew = self.skew.observe(node, b.time_unix_nano, t)
        if skew is not None:
            st.clock_skew_ms = skew
            flagged = self.skew.flagged(skew)
            if flagged != st.clock_skewed:
                st.clock_skewed = flagged
                self.log_event("warning" if flagged else "info",
                               f"clock off by {skew:+.1f} ms (limit ±{self.skew.limit_ms:.0f} ms)"
                               if flagged else f"clock back within ±{self.skew.limit_ms:.0f} ms "
                                               f"({skew:+.1f} ms)", node)
        figures = st.figures
        dropped = self.series_cap.merge(node, figures, self.latest.setdefault(node, {}), [b for b, _ in pend], newest)
        if dropped and (warning := self.series_cap.over(node, dropped)) is not None:
            self.log_event("warning", warning, node)
        # protobuf keeps every key ever written to a map until the message goes: copy the state into a
        # fresh message now and then, or a node's figures grow by a key's size on every batch
        writes = self._writes[node] = self._writes.get(node, 0) + len(newest.samples)
        if writes > COMPACT_FACTOR * (len(figures) + 64):
            st = self._fresh(node, st)
        if self.watchers:  # encoding events costs: only when someone watches
            self.watchers.publish_node(st)
            for b, _ in pend:
                if b.samples:
                    self.watchers.publish_samples(node, b)

    def _fresh(self, node: str, st: cluster_pb2.NodeState) -> cluster_pb2.NodeState:
        """``st`` copied into a message of its own size (what was overwritten stays behind)."""
        fresh = cluster_pb2.NodeState()
        fresh.CopyFrom(st)
        self.nodes[node] = fresh
        self._writes[node] = 0
        return fresh

    def on_capabilities(self, node: str, rep: common_pb2.CapabilityReport) -> None:
        st = self.nodes.get(node)
        if st is not None:
            st.ClearField("capabilities")  # the old report is not carried into the fresh copy
            st = self._fresh(node, st)
            st.capabilities.CopyFrom(rep)
            self.watchers.publish_node(st)

    def sweep(self, now_ns: int) -> None:
        """Bring the latest-value state up to date; mark connected nodes silent too long as stale."""
        self.settle()
        limit = int(self.stale_after * 1e9)
        for name, st in self.nodes.items():
            if st.status == CONNECTED and now_ns - st.last_seen_unix_nano > limit:
                st.status = STALE
                self.watchers.publish_node(st)
                self.log_event("warning", f"no batch for {self.stale_after:.0f}s: stale", name)
