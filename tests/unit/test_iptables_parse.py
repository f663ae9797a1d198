"""The census parsers on recorded iptables-save / nft output, and their malformed twins."""

from __future__ import annotations

from pathlib import Path

import pytest

from cniscope.agent.inspectors import iptables_parse as P
from cniscope.api.v1 import capabilities_pb2 as cap
from cniscope.core.errors import ParseError
from cniscope.lab import kubeproxy as kp

FIX = Path(__file__).parent.parent / "fixtures" / "iptables"
EPS = ["198.19.1.11", "198.19.2.11", "198.19.3.11"]


def test_nft_save_recording_counts_kube_proxy_layout() -> None:
    c = P.parse_iptables_save((FIX / "nft_save_kp4.txt").read_text())
    assert c.rules("nat") == 48 == kp.nat_rule_count(4)
    assert c.user_chains("nat") == 20 == kp.user_chain_count(4)
    assert c.rules("filter") == 1
    assert c.kube_services_rules == 4 + 1
    assert (c.kube_svc_chains, c.kube_sep_chains) == (4, 12)
    assert c.has_kube_proxy
    assert not c.ipvs_match
    assert c.tables["nat"]["PREROUTING"].policy == "ACCEPT"


def test_legacy_save_recording() -> None:
    c = P.parse_iptables_save((FIX / "legacy_save_kp4.txt").read_text())
    assert c.rules() == 48
    assert c.to_proto().tables["nat"].user_chains == 20


@pytest.mark.parametrize("name", ["legacy_save_kp4_truncated.txt", "nft_save_kp4_garbage.txt"])
def test_malformed_save_is_an_error(name: str) -> None:
    with pytest.raises(ParseError):
        P.parse_iptables_save((FIX / name).read_text())


@pytest.mark.parametrize("text", [
    "-A INPUT -j ACCEPT\n",                         # rule outside a table
    "*nat\n-A NOPE -j ACCEPT\nCOMMIT\n",            # undeclared chain
    "*nat\n:PREROUTING ACCEPT [0:0]\n*filter\n",    # table not committed
    "*nat\n:\nCOMMIT\n",                            # empty chain declaration
])
def test_hostile_save_lines(text: str) -> None:
    with pytest.raises(ParseError):
        P.parse_iptables_save(text)


@pytest.mark.parametrize("n", [0, 4, 104, 1000])
def test_generated_ruleset_counts(n: int) -> None:
    c = P.parse_iptables_save(kp.render_iptables(kp.plan(n, EPS)))
    assert c.rules("nat") == kp.nat_rule_count(n) == 8 + 10 * n
    assert c.user_chains("nat") == 4 + 4 * n
    assert c.kube_svc_chains == n
    assert c.kube_sep_chains == 3 * n


def test_nft_json_recording() -> None:
    c = P.parse_nft_json((FIX / "nft_kube_proxy_kp4.json").read_text())
    assert c.version == "1.0.6"
    k = c.kube_proxy()
    assert k == cap.NftKubeProxy(table="ip kube-proxy", rules=37, service_chains=4, endpoint_chains=12,
                                 service_ips=4)
    assert k is not None
    assert k.rules == kp.nft_rule_count(4)
    hooks = c.tables["ip kube-proxy"].hooks
    assert set(hooks) == {"nat-prerouting", "nat-output", "nat-postrouting"}


def test_nft_json_malformed() -> None:
    with pytest.raises(ParseError):
        P.parse_nft_json((FIX / "nft_kube_proxy_kp4_truncated.json").read_text())
    with pytest.raises(ParseError):
        P.parse_nft_json('{"something": []}')
    with pytest.raises(ParseError):
        P.parse_nft_json('{"nftables": [{"rule": {"family": "ip", "table": "t"}}]}')


def test_nft_tables() -> None:
    assert P.parse_nft_tables((FIX / "nft_tables.txt").read_text()) == [
        ("ip", "filter"), ("ip", "nat"), ("ip", "kube-proxy")]
    with pytest.raises(ParseError):
        P.parse_nft_tables((FIX / "nft_tables_garbage.txt").read_text())


def test_kube_proxy_metrics() -> None:
    f = P.kube_proxy_figures((FIX / "kube_proxy_metrics.txt").read_text())
    assert dict(f.rules) == {"iptables_filter": 8, "iptables_nat": 10059}
    assert f.sync_mean_ms == 170.0
    assert f.syncs == 100
    assert f.sync_seconds_total == pytest.approx(17.0)
    # 50th of 100 syncs lies in (0.128, 0.256]: 0.128 + 0.128 * (50-10)/88
    assert f.sync_p50_ms == pytest.approx(1000 * (0.128 + 0.128 * 40 / 88), abs=1e-3)
    assert 256 <= f.sync_p99_ms <= 512
    assert f.service_changes_total == 1004


def test_kube_proxy_metrics_malformed() -> None:
    with pytest.raises(ParseError):
        P.kube_proxy_figures((FIX / "kube_proxy_metrics_bad.txt").read_text())
    with pytest.raises(ParseError):
        P.kube_proxy_figures("process_cpu_seconds_total 1\n")


def test_histogram_quantile_edges() -> None:
    assert P.histogram_quantile(0.5, []) is None
    assert P.histogram_quantile(0.5, [(1.0, 0.0), (float("inf"), 0.0)]) is None
    assert P.histogram_quantile(0.99, [(1.0, 1.0), (float("inf"), 100.0)]) == 1.0


def test_report_folds_per_service_chains() -> None:
    d = P.parse_iptables_save(kp.render_iptables(kp.plan(104, EPS))).to_proto()
    chains = d.tables["nat"].chains
    assert chains["KUBE-SEP-*"] == cap.ChainRules(folded=312, rules=624)
    assert chains["KUBE-SVC-*"] == cap.ChainRules(folded=104, rules=312)
    assert chains["KUBE-SERVICES"] == cap.ChainRules(rules=105)
    assert len(chains) == 4 + 4 + 2
    n = P.parse_nft_json((FIX / "nft_kube_proxy_kp4.json").read_text()).to_proto()
    rbc = n.tables["ip kube-proxy"].rules_by_chain
    assert rbc["endpoint-*"] == cap.ChainRules(folded=12, rules=24)
    assert rbc["service-*"] == cap.ChainRules(folded=4, rules=4)
    assert P.chain_group("KUBE-SEP-SHORT") == "KUBE-SEP-SHORT"
