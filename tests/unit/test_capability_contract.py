"""The capability contract is typed: every inspection unit's findings are a message of their own in
``UnitReport.detail``, the retired JSON field stays retired, and no reader anywhere in the tree (nor
a recording) carries capability findings as JSON."""

from __future__ import annotations

import ast
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
from google.protobuf.descriptor import FieldDescriptor

from cniscope.agent.inspectors import INSPECTORS
from cniscope.agent.inspectors.unit import DETAIL_CASE, UnitDetail
from cniscope.api.v1 import capabilities_pb2, common_pb2
from cniscope.collector.validate import MAX_UNIT_DETAIL, Refused, check_capabilities

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("proto", "agent", "collector", "tui", "core", "benchmarks", "tests")
# where stored JSON findings are read on purpose: the conversion of stored reports and recordings
CONVERTERS = {
    Path("collector/cniscope/collector/capability_migration.py"),
    Path("tests/fixtures/recordings/generate.py"),
    Path("tests/unit/test_capability_migration.py"),
    Path("tests/unit/test_capability_contract.py"),
}
CAPABILITY_NAMES = {"units", "UnitReport", "CapabilityReport", "capabilities"}


def test_each_unit_has_a_typed_message_and_json_is_retired() -> None:
    d = common_pb2.UnitReport.DESCRIPTOR
    oneof = d.oneofs_by_name["detail"]
    cases = {f.name: f for f in oneof.fields}
    assert set(INSPECTORS.names()) == set(cases), "every registered unit needs its own message in the oneof"
    for name, f in cases.items():
        assert f.type == FieldDescriptor.TYPE_MESSAGE, name
        assert f.message_type is not None
        assert f.message_type.file.name == "cniscope/api/v1/capabilities.proto", name
    assert "detail_json" not in d.fields_by_name
    assert 6 not in d.fields_by_number
    strings = {f.name for f in d.fields if f.type == FieldDescriptor.TYPE_STRING}
    assert strings == {"name", "error", "summary"}, "no string field may carry findings"
    # the agent's union of detail messages is exactly the oneof's messages
    assert {t.DESCRIPTOR.full_name for t in get_args(UnitDetail)} == set(DETAIL_CASE)
    assert capabilities_pb2.DESCRIPTOR.package == "cniscope.api.v1"


def _python_files() -> Iterator[Path]:
    for root in SOURCES:
        for p in sorted((ROOT / root).rglob("*.py")):
            rel = p.relative_to(ROOT)
            if "_pb2" in p.name or rel in CONVERTERS or ".venv" in rel.parts:
                continue
            yield rel


def _scopes(tree: ast.Module) -> Iterator[tuple[str, list[ast.AST]]]:
    """Each function's own body, and the module's top-level statements outside functions."""
    top: list[ast.AST] = []
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            top.append(node)
    yield "<module>", top
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            yield fn.name, [fn]


def _names(nodes: list[ast.AST]) -> set[str]:
    out: set[str] = set()
    for n in nodes:
        for x in ast.walk(n):
            if isinstance(x, ast.Attribute):
                out.add(x.attr)
            elif isinstance(x, ast.Name):
                out.add(x.id)
            elif isinstance(x, ast.keyword) and x.arg:
                out.add(x.arg)
            elif isinstance(x, ast.Constant) and isinstance(x.value, str) and x.value.isidentifier():
                out.add(x.value)
    return out


def test_no_reader_handles_capability_findings_as_json() -> None:
    """A function that touches capability reports never touches a ``detail_json`` (probe results and
    runs still carry one of their own, in code that has nothing to do with capability reports)."""
    offenders = []
    for rel in _python_files():
        tree = ast.parse((ROOT / rel).read_text(), str(rel))
        for scope, nodes in _scopes(tree):
            names = _names(nodes)
            if "detail_json" in names and names & CAPABILITY_NAMES:
                offenders.append(f"{rel}:{scope}")
    assert not offenders, f"capability findings handled as JSON in: {offenders}"


def _units_with_json(obj: Any) -> Iterator[str]:
    if isinstance(obj, dict):
        units = obj.get("units")
        if isinstance(units, list):
            for u in units:
                if isinstance(u, dict) and ({"detail_json", "detailJson"} & set(u)):
                    yield str(u.get("name"))
        for v in obj.values():
            yield from _units_with_json(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _units_with_json(v)


def test_recordings_carry_typed_findings() -> None:
    found = []
    for p in sorted((ROOT / "tests" / "fixtures").rglob("*")):
        if p.suffix not in (".json", ".jsonl", ".gz") or p.name.endswith(".tar.gz"):
            continue
        text = gzip.decompress(p.read_bytes()).decode() if p.suffix == ".gz" else p.read_text()
        if "detail_json" not in text and "detailJson" not in text:
            continue   # (malformed twins of parser fixtures are never parsed)
        docs = [json.loads(line) for line in text.splitlines() if line.strip()] if ".jsonl" in p.name \
            else [json.loads(text)]
        found += [f"{p.name}: {u}" for d in docs for u in _units_with_json(d)]
    assert not found, f"recorded units with JSON findings: {sorted(set(found))[:10]}"


def test_the_scan_sees_what_it_is_meant_to_refuse() -> None:
    """The two shapes capability JSON used to take are caught by the scan."""
    for src in ("def f(rep):\n    return [json.loads(u.detail_json) for u in rep.units]\n",
                "rep.units.add(name='iptables', detail_json='{}')\n"):
        tree = ast.parse(src)
        assert any("detail_json" in (n := _names(nodes)) and n & CAPABILITY_NAMES for _, nodes in _scopes(tree))


def test_the_collector_refuses_findings_filed_under_another_unit_or_too_big() -> None:
    rep = common_pb2.CapabilityReport()
    rep.units.add(name="iptables", ok=True, available=True, iptables=capabilities_pb2.IptablesDetail(),
                  summary="no rules, kube-proxy none")
    rep.units.add(name="future_unit", ok=True, available=True)   # a unit without a typed message yet
    check_capabilities(rep)
    rep.units.add(name="iptables", ok=True, available=True, kernel=capabilities_pb2.KernelDetail(release="6.18"))
    with pytest.raises(Refused, match="'iptables' carries the findings of unit 'kernel'"):
        check_capabilities(rep)
    big = common_pb2.CapabilityReport()
    big.units.add(name="bpf", ok=True, available=True,
                  bpf=capabilities_pb2.BpfDetail(notes=["n" * 1024] * (MAX_UNIT_DETAIL // 1024 + 1)))
    with pytest.raises(Refused, match="findings larger than"):
        check_capabilities(big)
