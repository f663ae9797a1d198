"""The census unit with recorded tool output fed through its runner, and kube-proxy's metrics served
over real HTTP on loopback (kube-proxy itself cannot run here; the metrics text is a composed fixture)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from cniscope.agent.inspectors.iptables import ToolOutput, census
from cniscope.api.v1 import capabilities_pb2 as cap
from cniscope.core.errors import Unavailable

FIX = Path(__file__).parent.parent / "fixtures" / "iptables"


def recorded(**over: str) -> object:
    """A runner answering from the recordings; ``over`` replaces one tool's output by a fixture name
    (or "missing" to make the tool absent)."""
    files = {"iptables-legacy-save": "legacy_save_kp4.txt", "iptables-nft-save": "nft_save_kp4.txt",
             "nft list tables": "nft_tables.txt", "nft -j list table ip kube-proxy": "nft_kube_proxy_kp4.json",
             "nft -j list table ip nat": "nft_ip_nat_kp4.json", "nft -j list table ip filter": "nft_ip_filter.json"}
    files.update({k.replace("_", " ") if k.startswith("nft_") else k.replace("_", "-"): v for k, v in over.items()})

    def run(argv: Sequence[str]) -> ToolOutput:
        key = " ".join(argv)
        name = files.get(key)
        if name == "missing":
            raise Unavailable(f"{argv[0]} not installed")
        if name is None:
            return ToolOutput(1, "", f"unexpected command {key}")
        return ToolOutput(0, (FIX / name).read_text(), "")

    return run


def detail(runner: object, metrics_address: str = "off") -> tuple[cap.IptablesDetail, str]:
    """The census's typed findings and the summary it states of them."""
    res = census(runner, metrics_address=metrics_address, fast_tables=False)  # type: ignore[arg-type]
    assert isinstance(res.detail, cap.IptablesDetail)
    return res.detail, res.summary


def test_all_backends_counted_and_mode_detected() -> None:
    d, summary = detail(recorded())
    assert d.iptables_nft.tables["nat"].rules == 48
    assert d.iptables_legacy.rules == 48
    # ip filter / ip nat belong to iptables-nft and are not listed twice through nft
    assert list(d.nft.tables) == ["ip kube-proxy"]
    assert d.nft.kube_proxy.service_ips == 4
    assert d.kube_proxy.mode == "nftables"
    assert list(d.errors) == []
    assert summary == ("iptables-legacy 48 NAT rules, iptables-nft 48 NAT rules + 1 other, nft 37 rules, "
                       "kube-proxy nftables (4 services, 12 endpoints)")


def test_unparseable_line_costs_only_that_backend() -> None:
    d, summary = detail(recorded(iptables_nft_save="nft_save_kp4_garbage.txt"))
    assert "unrecognised iptables-save line" in d.iptables_nft.error
    assert not d.iptables_nft.ran
    assert d.iptables_legacy.rules == 48
    # without iptables-nft's view, nft lists its tables itself: the same 48 NAT rules, seen through nft
    assert d.nft.tables["ip nat"].rules == 48
    assert d.nft.kube_proxy.rules == 37
    assert len(d.errors) == 1
    assert d.errors[0].startswith("iptables-nft:")
    assert "iptables-nft error" in summary


def test_missing_tools_are_unavailable_not_errors() -> None:
    d, summary = detail(recorded(iptables_legacy_save="missing", nft_list_tables="missing"))
    assert d.iptables_legacy == cap.IptablesBackend(unavailable="iptables-legacy-save not installed")
    assert d.nft == cap.NftCensus(unavailable="nft not installed")
    assert d.kube_proxy.mode == "iptables"
    assert d.kube_proxy.backend == "iptables-nft"
    assert d.kube_proxy.nat_rules == 48
    assert list(d.errors) == []
    assert summary == "iptables-nft 48 NAT rules + 1 other, kube-proxy iptables (4 services, 12 endpoints)"
    with pytest.raises(Unavailable):
        census(recorded(iptables_legacy_save="missing", iptables_nft_save="missing",  # type: ignore[arg-type]
                        nft_list_tables="missing"), metrics_address="off", fast_tables=False)


class _Handler(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:  # noqa: N802 - stdlib hook name
        data = self.body if self.path == "/metrics" else b"iptables" if self.path == "/proxyMode" else b""
        self.send_response(200 if data else 404)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def metrics_server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("H", (_Handler,), {})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"127.0.0.1:{srv.server_address[1]}", handler
    finally:
        srv.shutdown()
        srv.server_close()


def test_kube_proxy_metrics_over_http(metrics_server: tuple[str, type[_Handler]]) -> None:
    address, handler = metrics_server
    handler.body = (FIX / "kube_proxy_metrics.txt").read_bytes()
    d, summary = detail(recorded(), address)
    assert d.kube_proxy.metrics.rules["iptables_nat"] == 10059
    assert d.kube_proxy.metrics.sync_mean_ms == 170.0
    assert d.kube_proxy.reported_mode == "iptables"
    assert summary.endswith("kube-proxy nftables (4 services, 12 endpoints), sync 170 ms")
    handler.body = (FIX / "kube_proxy_metrics_bad.txt").read_bytes()
    d, _ = detail(recorded(), address)
    assert d.kube_proxy.metrics.error
    assert d.errors[0].startswith("kube-proxy metrics:")


def test_kube_proxy_metrics_unreachable_is_unavailable() -> None:
    d, summary = detail(recorded(), "127.0.0.1:9")
    assert "not reachable" in d.kube_proxy.metrics.unavailable
    assert "sync" not in summary
