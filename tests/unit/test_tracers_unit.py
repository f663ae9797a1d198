"""Tracer pieces that need no kernel: histogram math, drop-reason names from a recorded tracefs
format file, BTF member offsets, settings, and the 'unavailable: reason' paths when bcc is missing."""

from __future__ import annotations

import importlib
import importlib.util
import struct
from pathlib import Path
from typing import Any

import pytest

from cniscope.agent.bpf.btf import Btf
from cniscope.agent.inspectors.tracer_readiness import inspect_tracers
from cniscope.agent.inspectors.unit import NOT_READY
from cniscope.agent.samplers.tracer_counters import TracerSampler, TracerSettings
from cniscope.agent.tracers import TRACERS, hist
from cniscope.agent.tracers.bcc_tracer import environment_problem
from cniscope.agent.tracers.drops import parse_reasons
from cniscope.api.v1 import capabilities_pb2 as cap
from cniscope.core.errors import ConfigError, ParseError, Unavailable
from cniscope.core.hostpaths import HostPaths

FIX = Path(__file__).parent.parent / "fixtures" / "tracefs"


def test_slots_are_contiguous_and_match_bounds() -> None:
    prev = -1
    for us in range(0, 70_000):
        s = hist.slot_of(us)
        lo, hi = hist.slot_bounds(s)
        assert lo <= us < hi
        assert s in (prev, prev + 1)
        prev = s
    assert hist.slot_bounds(4) == (4, 5)
    assert hist.slot_bounds(hist.slot_of(1000)) == (896, 1024)


def test_quantiles_and_cumulative_buckets() -> None:
    counts = [0] * hist.SLOTS
    for us in [100] * 50 + [1000] * 49 + [10_000]:
        counts[hist.slot_of(us)] += 1
    p50 = hist.quantile(counts, 0.5)
    p99 = hist.quantile(counts, 0.99)
    assert p50 is not None
    assert p99 is not None
    assert 96 <= p50 <= 112
    assert 896 <= p99 <= 1024
    assert hist.quantile([0] * hist.SLOTS, 0.5) is None
    le = dict(hist.cumulative_le(counts))
    assert le["64"] == 0
    assert le["128"] == 50
    assert le["1024"] == 99
    assert le["16384"] == 100
    assert le["+Inf"] == 100


def test_drop_reasons_from_recorded_format() -> None:
    names = parse_reasons((FIX / "kfree_skb_format.txt").read_text())
    assert names[2] == "NOT_SPECIFIED"
    assert names[3] == "NO_SOCKET"
    assert "NETFILTER_DROP" in names.values()


@pytest.mark.parametrize("text", [(FIX / "kfree_skb_format_truncated.txt").read_text(), "", "name: x\n"])
def test_drop_reasons_malformed(text: str) -> None:
    with pytest.raises(ParseError):
        parse_reasons(text)


def _btf() -> bytes:
    """A tiny BTF: int; struct inner {int a; int b;}; struct outer {int x; union {struct inner in;}; }."""
    strs = b"\0int\0inner\0a\0b\0outer\0x\0in\0"

    def off(name: str) -> int:
        return strs.index(b"\0" + name.encode() + b"\0") + 1

    types = struct.pack("<III", off("int"), 1 << 24, 4) + struct.pack("<I", 32)          # 1 int
    types += struct.pack("<III", off("inner"), (4 << 24) | 2, 8)                          # 2 inner
    types += struct.pack("<III", off("a"), 1, 0) + struct.pack("<III", off("b"), 1, 32)
    types += struct.pack("<III", 0, (5 << 24) | 1, 8) + struct.pack("<III", off("in"), 2, 0)  # 3 anon union
    types += struct.pack("<III", off("outer"), (4 << 24) | 2, 16)                          # 4 outer
    types += struct.pack("<III", off("x"), 1, 0) + struct.pack("<III", 0, 3, 64)
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strs))
    return hdr + types + strs


def test_btf_offsets_through_anonymous_members() -> None:
    b = Btf(_btf())
    assert b.offset("outer", "x") == 0
    assert b.offset("outer", "in.b") == 12
    with pytest.raises(KeyError):
        b.offset("outer", "in.c")
    with pytest.raises(KeyError):
        b.offset("nosuch", "x")


@pytest.mark.parametrize("cut", [10, 40, -3])
def test_btf_truncated_is_parse_error(cut: int) -> None:
    with pytest.raises(ParseError):
        Btf(_btf()[:cut])


def test_settings_from_env() -> None:
    s = TracerSettings.from_env({"CNISCOPE_TRACERS": "tcpconnlat, drops", "CNISCOPE_TRACER_NETNS": "/run/netns/x"})
    assert s == TracerSettings(names=("tcpconnlat", "drops"), netns="/run/netns/x")
    assert TracerSettings.from_env({}) == TracerSettings()
    with pytest.raises(ConfigError):
        TracerSettings.from_env({"CNISCOPE_TRACERS": "tcpconnlat,nosuch"})


def test_environment_problems_are_reasons(tmp_path: Path) -> None:
    assert environment_problem([], tracefs=tmp_path / "none") == f"tracefs is not mounted at {tmp_path / 'none'}"
    (tmp_path / "events").mkdir()
    assert environment_problem(["sock/x"], tracefs=tmp_path) == "tracepoint sock/x not in this kernel"
    assert "kernel headers missing" in str(environment_problem([], modules=tmp_path))


@pytest.fixture
def no_bcc(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import, real_find = importlib.import_module, importlib.util.find_spec

    def imp(name: str, package: str | None = None) -> Any:
        if name == "bcc":
            raise ImportError("No module named 'bcc'")
        return real_import(name, package)

    def find(name: str, package: str | None = None) -> Any:
        return None if name == "bcc" else real_find(name, package)

    monkeypatch.setattr(importlib, "import_module", imp)
    monkeypatch.setattr(importlib.util, "find_spec", find)


@pytest.mark.usefixtures("no_bcc")
def test_missing_bcc_is_unavailable_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("cniscope.agent.tracers.bcc_tracer.environment_problem", lambda events: None)
    with pytest.raises(Unavailable, match="bcc is not importable"):
        TRACERS.get("tcpconnlat")(None).start()
    sampler = TracerSampler(TracerSettings(names=("tcpconnlat", "retrans")))
    starter = sampler.start()
    assert starter is not None
    starter.join(10)
    assert sampler.sample(1) == []
    assert set(sampler.unavailable) == {"tcpconnlat", "retrans"}
    assert all(v.startswith("unavailable: bcc is not importable") for v in sampler.unavailable.values())
    res = inspect_tracers(HostPaths())
    assert {i.name for i in res.items} == {"tracer_tcpconnlat", "tracer_retrans", "tracer_drops"}
    assert all(i.state == NOT_READY and "bcc is not importable" in i.reason for i in res.items)
    assert isinstance(res.detail, cap.TracersDetail)
    drops = next(t for t in res.detail.tracers if t.name == "drops")
    assert not drops.available
    assert drops.reason.startswith("unavailable: bcc is not importable")
    assert res.summary == "0 of 3 tracers can run: bcc is not importable; install Debian's python3-bpfcc"


def test_sampler_without_tracers_does_nothing() -> None:
    s = TracerSampler(TracerSettings())
    assert s.start() is None
    assert s.sample(1) == []
