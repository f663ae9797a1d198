"""Run tables in the collector's SQLite (additive: created on first use next to the core tables).

``run_values`` keeps every repetition's value; ``run_figures`` the median with min/max over them, so
a stored figure can always be checked against the repetitions it came from.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from cniscope.api.v1 import runs_pb2
from cniscope.core import benchmetrics as bm
from cniscope.core.errors import NotFound, ValidationError

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, label TEXT NOT NULL, kind TEXT NOT NULL, suite TEXT, repeat INTEGER,
    status INTEGER NOT NULL, started_ns INTEGER NOT NULL, finished_ns INTEGER, fingerprint TEXT NOT NULL,
    pairs TEXT NOT NULL, skipped TEXT NOT NULL, error TEXT, detail TEXT
);
CREATE TABLE IF NOT EXISTS run_values (
    run_id TEXT NOT NULL, metric TEXT NOT NULL, rep INTEGER NOT NULL, pair TEXT NOT NULL,
    value REAL NOT NULL, probe_id TEXT
);
CREATE INDEX IF NOT EXISTS run_values_run ON run_values (run_id, metric);
CREATE TABLE IF NOT EXISTS run_figures (
    run_id TEXT NOT NULL, metric TEXT NOT NULL, median REAL NOT NULL, min REAL NOT NULL,
    max REAL NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (run_id, metric)
) WITHOUT ROWID;
"""

def ensure(conn: sqlite3.Connection) -> None:
    """Create the run tables when this database has none yet (one cheap lookup otherwise)."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='run_figures'").fetchone() is None:
        conn.executescript(SCHEMA)
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('runs_schema_version', '1')")


def insert_run(conn: sqlite3.Connection, run: runs_pb2.Run) -> None:
    ensure(conn)
    conn.execute("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", (
        run.run_id, run.label, run.kind, run.suite, run.repeat, run.status, run.started_unix_nano,
        run.finished_unix_nano, json.dumps(dict(run.fingerprint), sort_keys=True), json.dumps(list(run.pairs)),
        json.dumps([[s.item, s.reason] for s in run.skipped]), run.error, run.detail_json))


def add_values(conn: sqlite3.Connection, run_id: str, rows: Sequence[tuple[str, int, str, float, str]]) -> None:
    """(metric, rep, pair, value, probe_id) per measured figure."""
    ensure(conn)
    conn.executemany("INSERT INTO run_values VALUES (?,?,?,?,?,?)", [(run_id, *r) for r in rows])


def values(conn: sqlite3.Connection, run_id: str) -> dict[str, list[float]]:
    ensure(conn)
    out: dict[str, list[float]] = {}
    for m, v in conn.execute("SELECT metric, value FROM run_values WHERE run_id=? ORDER BY rep, pair", (run_id,)):
        out.setdefault(m, []).append(float(v))
    return out


def finish(conn: sqlite3.Connection, run: runs_pb2.Run, figures: Mapping[str, bm.FigureStat]) -> None:
    """Store the final state and the figures (medians of the stored values) in one transaction."""
    ensure(conn)
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("UPDATE runs SET status=?, finished_ns=?, fingerprint=?, pairs=?, skipped=?, error=?, detail=? "
                     "WHERE run_id=?", (
                         run.status, run.finished_unix_nano, json.dumps(dict(run.fingerprint), sort_keys=True),
                         json.dumps(list(run.pairs)), json.dumps([[s.item, s.reason] for s in run.skipped]),
                         run.error, run.detail_json, run.run_id))
        conn.execute("DELETE FROM run_figures WHERE run_id=?", (run.run_id,))
        conn.executemany("INSERT INTO run_figures VALUES (?,?,?,?,?,?)",
                         [(run.run_id, k, f.median, f.lo, f.hi, f.n) for k, f in figures.items()])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _run_from_row(conn: sqlite3.Connection, row: Sequence[Any]) -> runs_pb2.Run:
    (run_id, label, kind, suite, repeat, status, started, finished, fp, pairs, skipped, error, detail) = row
    run = runs_pb2.Run(run_id=run_id, label=label, kind=kind, suite=suite or "", repeat=repeat or 0,
                       status=status, started_unix_nano=started, finished_unix_nano=finished or 0,
                       fingerprint=json.loads(fp), pairs=json.loads(pairs), error=error or "",
                       detail_json=detail or "")
    for item, reason in json.loads(skipped):
        run.skipped.add(item=item, reason=reason)
    for m, med, lo, hi, n in conn.execute("SELECT metric, median, min, max, n FROM run_figures WHERE run_id=?",
                                          (run_id,)):
        run.figures[m].CopyFrom(runs_pb2.FigureStat(median=med, min=lo, max=hi, n=n))
    return run


def list_runs(conn: sqlite3.Connection, limit: int = 100) -> list[runs_pb2.Run]:
    ensure(conn)
    rows = conn.execute("SELECT * FROM runs ORDER BY started_ns DESC LIMIT ?", (max(1, min(limit or 100, 10_000)),))
    return [_run_from_row(conn, r) for r in rows.fetchall()]


def resolve(conn: sqlite3.Connection, ref: str) -> str:
    """A run id from an id, a unique id prefix, or a label (the latest run with that label)."""
    ensure(conn)
    if not ref:
        raise ValidationError("a run id or label is required")
    if conn.execute("SELECT 1 FROM runs WHERE run_id=?", (ref,)).fetchone():
        return ref
    by_label = conn.execute("SELECT run_id FROM runs WHERE label=? ORDER BY started_ns DESC LIMIT 1", (ref,)).fetchone()
    if by_label:
        return str(by_label[0])
    pre = conn.execute("SELECT run_id FROM runs WHERE run_id LIKE ? || '%' ESCAPE '\\'",
                       (ref.replace("%", "\\%").replace("_", "\\_"),)).fetchall()
    if len(pre) == 1:
        return str(pre[0][0])
    if len(pre) > 1:
        some = sorted(r[0] for r in pre)
        raise ValidationError(f"run {_quoted(ref)} is ambiguous: {', '.join(some[:10])}"
                              + (f" and {len(some) - 10} more" if len(some) > 10 else ""))
    raise NotFound(f"no run with id or label {_quoted(ref)}")


def _quoted(ref: str) -> str:
    """A reference as an error quotes it: at most 200 characters of it."""
    return repr(ref) if len(ref) <= 200 else f"{ref[:200]!r}… ({len(ref)} characters)"


def get_run(conn: sqlite3.Connection, ref: str) -> runs_pb2.Run:
    run_id = resolve(conn, ref)
    row = conn.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
    return _run_from_row(conn, row)


def delete_run(conn: sqlite3.Connection, ref: str) -> bool:
    run_id = resolve(conn, ref)
    conn.execute("BEGIN IMMEDIATE")
    try:
        for t in ("run_values", "run_figures", "runs"):
            conn.execute(f"DELETE FROM {t} WHERE run_id=?", (run_id,))  # noqa: S608 - fixed table names
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return True


def mark_interrupted(conn: sqlite3.Connection, now_ns: int) -> int:
    """Runs left 'running' by a collector that stopped: they are cancelled, not running."""
    ensure(conn)
    cur = conn.execute("UPDATE runs SET status=?, finished_ns=?, error=? WHERE status=?",
                       (runs_pb2.RUN_STATUS_CANCELLED, now_ns, "the collector stopped during the run",
                        runs_pb2.RUN_STATUS_RUNNING))
    return cur.rowcount


def to_view(run: runs_pb2.Run) -> Any:
    from cniscope.collector.reports.report_model import RunView

    status = runs_pb2.RunStatus.Name(run.status).removeprefix("RUN_STATUS_").lower()
    return RunView(id=run.run_id, label=run.label, created_ns=run.started_unix_nano, suite=run.suite,
                   repeat=run.repeat, status=status, fingerprint=dict(run.fingerprint),
                   figures={k: bm.FigureStat(v.median, v.min, v.max, v.n) for k, v in run.figures.items()},
                   skipped=[(s.item, s.reason) for s in run.skipped])
