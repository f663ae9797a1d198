"""The demo's probe-suite table: headline figures per probe, failures as rows."""

from __future__ import annotations

from cniscope.api.v1 import common_pb2
from cniscope.core.render import demo_suite_table


def test_suite_table_shows_headlines_and_errors() -> None:
    rows = [
        common_pb2.ProbeResult(kind="tcp", ok=True, figures={"received_gbps": 4.2, "retransmits": 3, "x": 1}),
        common_pb2.ProbeResult(kind="udp", ok=False, error="iperf3 not found"),
    ]
    text = demo_suite_table(rows)
    assert "received_gbps 4.200 Gbit/s" in text
    assert "retransmits 3" in text
    assert " x " not in text
    assert "udp" in text
    assert "error" in text
    assert "iperf3 not found" in text
