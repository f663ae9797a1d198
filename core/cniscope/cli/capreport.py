"""Renderings of capability reports: one node (``cniscope node report``) and the cluster matrix
(``cniscope report capabilities``) as terminal tables, JSON-ready dicts and Markdown."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format

from cniscope.api.v1 import common_pb2
from cniscope.core.render import table

STATE = {0: "?", 1: "ready", 2: "not ready", 3: "unknown"}


def unit_dict(u: common_pb2.UnitReport) -> dict[str, Any]:
    """One unit as plain data: status, its summary, and its typed findings under ``detail``."""
    status = "ok" if u.ok and u.available else ("unavailable" if u.ok else "failed")
    case = u.WhichOneof("detail")
    detail = json_format.MessageToDict(getattr(u, case), preserving_proto_field_name=True) if case else {}
    return {"name": u.name, "status": status, "error": u.error, "duration_seconds": u.duration_seconds,
            "summary": u.summary or u.error, "detail": detail}


def report_dict(report: common_pb2.CapabilityReport) -> dict[str, Any]:
    """A CapabilityReport as plain data."""
    return {"kernel": report.kernel, "time_unix_nano": report.time_unix_nano,
            "items": [{"name": i.name, "state": STATE.get(i.state, "?"), "reason": i.reason} for i in report.items],
            "units": [unit_dict(u) for u in report.units]}


def render_node(report: common_pb2.CapabilityReport, fmt: str = "table") -> str:
    d = report_dict(report)
    if fmt == "json":
        return json.dumps(d, indent=2, sort_keys=True)
    items = [[i["name"], i["state"], i["reason"]] for i in d["items"]]
    units = [[u["name"], u["status"], f"{u['duration_seconds'] * 1000:.0f} ms", u["summary"] or "-"]
             for u in d["units"]]
    if fmt == "markdown":
        return "\n".join([f"## Node report (kernel {d['kernel']})", "",
                          md_table(["item", "state", "reason"], items), "",
                          md_table(["unit", "status", "time", "summary"], units), ""])
    total = sum(u["duration_seconds"] for u in d["units"])
    return "\n".join([f"node report — kernel {d['kernel']}, {len(d['units'])} units in {total:.2f} s", "",
                      table(["ITEM", "STATE", "REASON"], items), "",
                      table(["UNIT", "STATUS", "TIME", "SUMMARY"], units, "llrl")])


def md_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def matrix_dict(nodes: Sequence[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in nodes:
        if not n.HasField("capabilities"):
            out[n.node] = None
            continue
        d = report_dict(n.capabilities)
        out[n.node] = {"kernel": d["kernel"],
                       "items": {i["name"]: {"state": i["state"], "reason": i["reason"]} for i in d["items"]},
                       "units": {u["name"]: {"status": u["status"], "error": u["error"]} for u in d["units"]}}
    return {"nodes": out}


def render_matrix(nodes: Sequence[Any], fmt: str = "table") -> str:
    """Items as rows, nodes as columns; reasons for anything not ready listed once below."""
    m = matrix_dict(nodes)
    if fmt == "json":
        return json.dumps(m, indent=2, sort_keys=True)
    names = sorted(m["nodes"])
    items: list[str] = []
    for n in names:
        for it in (m["nodes"][n] or {}).get("items", {}):
            if it not in items:
                items.append(it)
    rows: list[list[object]] = []
    notes: dict[tuple[str, str], list[str]] = {}
    for it in items:
        row: list[object] = [it]
        for n in names:
            rep = m["nodes"][n]
            cell = (rep or {}).get("items", {}).get(it)
            if rep is None:
                row.append("no report")
            elif cell is None:
                row.append("-")
            else:
                row.append(cell["state"])
                if cell["state"] != "ready":
                    notes.setdefault((it, cell["reason"]), []).append(n)
        rows.append(row)
    unit_rows: list[list[object]] = []
    units: list[str] = []
    for n in names:
        for u in (m["nodes"][n] or {}).get("units", {}):
            if u not in units:
                units.append(u)
    for u in units:
        unit_rows.append([u, *[((m["nodes"][n] or {}).get("units", {}).get(u) or {}).get("status", "-")
                               for n in names]])
    note_lines = [f"{it} on {', '.join(ns)}: {why}" for (it, why), ns in notes.items()]
    if fmt == "markdown":
        return "\n".join(["## Capability matrix", "", md_table(["item", *names], rows), "",
                          md_table(["unit", *names], unit_rows), "",
                          *[f"- {ln}" for ln in note_lines], ""])
    return "\n".join([table(["ITEM", *[n.upper() for n in names]], rows), "",
                      table(["UNIT", *[n.upper() for n in names]], unit_rows), "",
                      *(["why:"] + [f"  {ln}" for ln in note_lines] if note_lines else [])]).rstrip()
