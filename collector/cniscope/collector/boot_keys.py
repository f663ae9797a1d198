"""Proof of boot: a reconnect or replay for a node must come from the agent that started that boot.

A boot id is public (GetNode shows it); the boot key that goes with it is not. The first Hello of a
boot that carries a key binds the boot to the key's hash (kept here and in the store, so a collector
restart keeps the binding); every later Hello naming that boot — as its own, or as an earlier boot
it replays from its disk spool — must carry the same key, or it is refused and the stream connected
for that boot stays. Agents that predate boot keys send none; their boots stay unbound.
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3

from cniscope.collector.store import Store

KEEP_PER_NODE = 64   # bound boots remembered per node (the newest)

DDL = """CREATE TABLE IF NOT EXISTS boot_keys (
    node TEXT NOT NULL, boot_id TEXT NOT NULL, key_hash BLOB NOT NULL, t_ns INTEGER NOT NULL,
    PRIMARY KEY (node, boot_id))"""


def _hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _load(conn: sqlite3.Connection) -> dict[tuple[str, str], bytes]:
    conn.execute(DDL)
    return {(n, b): bytes(h) for n, b, h in conn.execute("SELECT node, boot_id, key_hash FROM boot_keys")}


def _save(conn: sqlite3.Connection, node: str, rows: list[tuple[str, bytes]], now_ns: int) -> None:
    conn.executemany("INSERT OR IGNORE INTO boot_keys VALUES (?,?,?,?)",
                     [(node, b, h, now_ns) for b, h in rows])
    conn.execute("DELETE FROM boot_keys WHERE node=? AND boot_id NOT IN (SELECT boot_id FROM boot_keys "
                 "WHERE node=? ORDER BY t_ns DESC LIMIT ?)", (node, node, KEEP_PER_NODE))


class BootKeys:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._bound: dict[tuple[str, str], bytes] = {}

    async def load(self) -> None:
        self._bound = await self.store.call(_load, self.store.conn)

    def check(self, node: str, boots: dict[str, str]) -> str | None:
        """``boots``: boot id → the key the Hello presents for it. None when every bound boot's key
        matches; else why not (naming the boot, never the key)."""
        for boot, key in boots.items():
            want = self._bound.get((node, boot))
            if want is not None and not hmac.compare_digest(want, _hash(key)):
                what = "no boot key" if not key else "a boot key that does not match"
                return (f"node {node} boot {boot[:16]} was started by another agent: this Hello carries "
                        f"{what}")
        return None

    async def bind(self, node: str, boots: dict[str, str], now_ns: int) -> None:
        """Bind every boot presented with a key that is not bound yet."""
        rows = [(b, _hash(k)) for b, k in boots.items() if k and (node, b) not in self._bound]
        if not rows:
            return
        for b, h in rows:
            self._bound[(node, b)] = h
        await self.store.call(_save, self.store.conn, node, rows, now_ns)
        mine = [k for k in self._bound if k[0] == node]
        if len(mine) > KEEP_PER_NODE:  # the store kept the newest; forget the same here
            kept = set(await self.store.call(_kept, self.store.conn, node))
            for k in mine:
                if k[1] not in kept:
                    del self._bound[k]


def _kept(conn: sqlite3.Connection, node: str) -> list[str]:
    return [b for (b,) in conn.execute("SELECT boot_id FROM boot_keys WHERE node=?", (node,))]
