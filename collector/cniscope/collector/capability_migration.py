"""Stored capability reports from before typed findings, converted to the typed shape.

Agents used to send each inspection unit's findings as a JSON string in ``UnitReport`` field 6
(now reserved). A report stored then still carries that field, unknown to today's messages; this
module reads it and fills the unit's typed detail (``capabilities.proto``) from it, so a database
written before the change reads like one written after. The store runs :func:`migrate` once when
it opens such a database (schema 2 → 3). Findings that do not fit the typed messages are dropped,
never guessed at; a converted unit has no summary (the agent that made it stated none), a unit that
failed or did not apply states its error.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format, message_factory
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet

from cniscope.api.v1 import agent_pb2, common_pb2

LEGACY_DETAIL_FIELD = 6   # UnitReport's retired JSON findings
Doc = dict[str, Any]


def _no_nulls(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _no_nulls(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_no_nulls(x) for x in v if x is not None]
    return v


def _dict(v: Any) -> Doc:
    return v if isinstance(v, dict) else {}


def _chains(grouped: Any) -> Doc:
    """``{"KUBE-SERVICES": 105, "KUBE-SEP-*": {"chains": 312, "rules": 624}}`` → ChainRules rows."""
    return {k: {"rules": v} if isinstance(v, int) else {"rules": _dict(v).get("rules", 0),
                                                        "folded": _dict(v).get("chains", 0)}
            for k, v in _dict(grouped).items()}


def _ran(b: Doc) -> Doc:
    return {**b, "ran": not ("unavailable" in b or "error" in b)}


def _iptables(doc: Doc) -> Doc:
    def backend(v: Any) -> Doc:
        b = _ran(_dict(v))
        b["tables"] = {t: {**_dict(tab), "chains": _chains(_dict(tab).get("chains"))}
                       for t, tab in _dict(b.get("tables")).items()}
        return b

    nft = _ran(_dict(doc.get("nft")))
    nft["tables"] = {k: {**_dict(t), "rules_by_chain": _chains(_dict(t).get("rules_by_chain"))}
                     for k, t in _dict(nft.get("tables")).items()}
    return {"iptables_legacy": backend(doc.get("iptables-legacy")), "iptables_nft": backend(doc.get("iptables-nft")),
            "nft": nft, "kube_proxy": doc.get("kube_proxy"), "errors": doc.get("errors")}


def _interface(r: Doc) -> Doc:
    r = dict(r)
    speed = r.pop("speed", None)
    if speed == "virtual":
        r["virtual"] = True
    elif isinstance(speed, int):
        r["speed_mbps"] = speed
    elif isinstance(speed, str) and speed.removesuffix("Mb/s").isdigit():
        r["speed_mbps"] = int(speed.removesuffix("Mb/s"))
    elif isinstance(speed, str):
        r["speed_error"] = speed
    return r


def _privileges(doc: Doc) -> Doc:
    def missing(why: Any) -> list[str]:
        if not isinstance(why, str) or why == "ok":
            return []
        return [c.strip().removeprefix("CAP_") for c in why.removeprefix("missing ").split(",")]

    return {"effective": doc.get("effective"),
            "features": [{"feature": f, "missing": missing(why)} for f, why in _dict(doc.get("features")).items()]}


RESHAPE: dict[str, Callable[[Doc], Doc]] = {
    "iptables": _iptables,
    "nic": lambda doc: {"interfaces": [_interface(_dict(r)) for r in doc.get("interfaces") or []]},
    "privileges": _privileges,
    "tracers": lambda doc: {"tracers": [{"name": k, **_dict(v)} for k, v in doc.items()]},
}


def typed_detail(unit: str, doc: Any) -> Message | None:
    """The typed findings of ``unit`` from its legacy JSON findings; None for a unit with no typed
    message or findings that do not fit it."""
    field = common_pb2.UnitReport.DESCRIPTOR.fields_by_name.get(unit)
    if field is None or field.containing_oneof is None or field.message_type is None or not isinstance(doc, dict):
        return None
    msg = message_factory.GetMessageClass(field.message_type)()
    try:
        json_format.ParseDict(_no_nulls(RESHAPE.get(unit, dict)(doc)), msg, ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, ValueError, AttributeError):
        return None
    return msg


def _legacy_json(u: common_pb2.UnitReport) -> str | None:
    fields = UnknownFieldSet(u)
    for i in range(len(fields)):
        f = fields[i]
        if f.field_number == LEGACY_DETAIL_FIELD and isinstance(f.data, bytes):
            return f.data.decode("utf-8", "replace")
    return None


def convert_report(rep: common_pb2.CapabilityReport) -> bool:
    """Fill each unit's typed detail from its legacy JSON findings, in place, dropping the JSON;
    whether anything was converted."""
    changed = False
    for u in rep.units:
        if u.error and not u.summary:   # a unit that failed or does not apply states its reason
            u.summary, changed = u.error, True
        text = _legacy_json(u)
        if text is None:
            continue
        changed = True
        try:
            msg = typed_detail(u.name, json.loads(text))
        except ValueError:
            msg = None
        keep = common_pb2.UnitReport(name=u.name, ok=u.ok, available=u.available, error=u.error,
                                     duration_seconds=u.duration_seconds, summary=u.summary)
        if msg is not None:
            getattr(keep, u.name).CopyFrom(msg)
        u.Clear()   # drops the unknown legacy field with everything else
        u.CopyFrom(keep)
    return changed


def _convert_blob(raw: bytes | None, message: type[Message], reports: Callable[[Any], list[Any]]) -> bytes | None:
    """The blob re-serialised with its capability reports converted; None when nothing changed."""
    if not raw:
        return None
    msg = message()
    try:
        msg.ParseFromString(raw)
    except DecodeError:
        return None
    changed = [convert_report(r) for r in reports(msg)]
    return msg.SerializeToString() if any(changed) else None


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def migrate(conn: sqlite3.Connection) -> None:
    """Convert every stored capability report (the latest per node, and the one in each node's
    Hello) in the caller's transaction."""
    tables = _tables(conn)
    if "capabilities" in tables:
        for rowid, raw in conn.execute("SELECT rowid, report FROM capabilities").fetchall():
            new = _convert_blob(raw, common_pb2.CapabilityReport, lambda m: [m])
            if new is not None:
                conn.execute("UPDATE capabilities SET report=? WHERE rowid=?", (new, rowid))
    if "nodes" in tables:
        for rowid, raw in conn.execute("SELECT rowid, hello FROM nodes").fetchall():
            new = _convert_blob(raw, agent_pb2.Hello,
                                lambda m: [m.capabilities] if m.HasField("capabilities") else [])
            if new is not None:
                conn.execute("UPDATE nodes SET hello=? WHERE rowid=?", (new, rowid))
