"""Probe pieces that need no lab: every declared kind implemented, the capabilities a kind's
privileges ask for, missing tools, HTTP response heads, drop counters, DNS resolver discovery."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cniscope.agent import caps
from cniscope.agent.probes import PROBES
from cniscope.agent.probes.dns import nameserver_from, resolv_conf_for
from cniscope.agent.probes.httpload import HttpError, parse_response_head
from cniscope.agent.probes.netcounters import parse_dev_tx_drops, parse_snmp_udp
from cniscope.agent.probes.probe import ProbeContext
from cniscope.agent.targets.iperf import IperfServers
from cniscope.core.errors import ToolMissing, Unavailable
from cniscope.core.probekinds import KINDS, spec_for


def ctx(kind: str) -> ProbeContext:
    return ProbeContext(probe_id="p", kind=kind, source_node="a", target_node="b",
                        target_address="198.18.0.12", path="host",
                        params=spec_for(kind).params.validate({}), iperf_port=5201, target_port=7411)


def test_every_declared_kind_has_a_probe() -> None:
    assert KINDS.names() == PROBES.names()


def test_every_declared_privilege_is_an_agent_feature() -> None:
    for spec in KINDS:
        assert set(spec.privileges) <= set(caps.FEATURE_CAPS), spec.kind


def test_a_kinds_privileges_and_the_path_decide_the_capabilities(monkeypatch: pytest.MonkeyPatch) -> None:
    rtt = spec_for("rtt").privileges
    monkeypatch.setitem(caps.NEEDED_ONLY_WHEN, "raw_icmp", lambda: True)    # no ICMP datagram sockets here
    assert caps.probe_features(rtt) == ["raw_icmp"]
    with pytest.raises(Unavailable, match="missing CAP_NET_RAW"):
        caps.require_probe(rtt, have={"SYS_ADMIN"})
    caps.require_probe(spec_for("connect").privileges, have=set())           # a plain host-path probe
    monkeypatch.setitem(caps.NEEDED_ONLY_WHEN, "raw_icmp", lambda: False)
    assert caps.probe_features(rtt, "/proc/42/ns/net") == ["pod_path", "probe_pod_netns"]
    with pytest.raises(Unavailable, match="missing CAP_SYS_ADMIN, CAP_SYS_PTRACE"):
        caps.require_probe(rtt, "/proc/42/ns/net", have={"NET_RAW"})


@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_missing_iperf3_is_a_clear_failure(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    out = asyncio.run(PROBES.get(kind).run(ctx(kind)))
    assert not out.ok
    assert "iperf3 not found" in out.error
    assert not out.figures


def test_missing_iperf3_on_the_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ToolMissing, match="iperf3 not found on the target"):
        asyncio.run(IperfServers().start("p", "127.0.0.1", 5201, "", 1.0))


def test_response_head() -> None:
    status, headers = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\n")
    assert status == 200
    assert headers == {"content-length": "9", "connection": "close"}
    with pytest.raises(HttpError) as ei:
        parse_response_head(b"SSH-2.0-OpenSSH\r\n\r\n")
    assert ei.value.kind == "protocol"
    with pytest.raises(HttpError):
        parse_response_head(b"HTTP/1.1 \xb2\xb2\xb2 OK\r\n\r\n")  # latin-1 superscript digits


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_response_head_garbage_is_a_protocol_error_or_parses(raw: bytes) -> None:
    kind = "parsed"
    try:
        parse_response_head(raw)
    except HttpError as exc:
        kind = exc.kind
    assert kind in ("parsed", "protocol")  # never any other exception type


SNMP = """Ip: Forwarding DefaultTTL
Ip: 1 64
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 1000 2 0 990 0 7 0 0 0
"""
DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    8086      92    0    0    0     0          0         0     8086      92    0    0    0     0       0          0
  eth0: 1000 10 0 0 0 0 0 0 2000 20 0 3 0 0 0 0
"""


def test_drop_counter_parsers() -> None:
    assert parse_snmp_udp(SNMP)["SndbufErrors"] == 7
    assert parse_dev_tx_drops(DEV) == {"eth0": 3}
    assert parse_snmp_udp("") == {}


def test_resolver_discovery(tmp_path: Path) -> None:
    assert nameserver_from("# c\nsearch x\nnameserver 198.18.64.2\nnameserver 1.1.1.1\n") == "198.18.64.2"
    assert nameserver_from("search x\n") is None
    assert resolv_conf_for("/proc/123/ns/net") == Path("/proc/123/root/etc/resolv.conf")
    assert resolv_conf_for("") == Path("/etc/resolv.conf")
