"""The nftables table list over one raw NFT_MSG_GETTABLE dump agrees with ``nft list tables``, in a
throwaway network namespace: every family, and more tables than one netlink read holds."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest

from cniscope.agent import netlink
from cniscope.agent.inspectors.iptables import NFPROTO
from cniscope.lab import netns
from tests import caps

pytestmark = [pytest.mark.netns]


@pytest.fixture
def ns() -> Iterator[str]:
    caps.tool("nft")
    name = f"cnsnft{uuid.uuid4().hex[:6]}"
    netns.add(name)
    try:
        yield name
    finally:
        netns.delete(name)


def nft(ns: str, *args: str, script: str = "") -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "nft", *args], input=script, capture_output=True, text=True,
                          check=True).stdout


def test_every_family_and_a_dump_longer_than_one_read(ns: str) -> None:
    path = str(netns.NETNS_DIR / ns)
    assert netlink.nft_tables(path) == []
    families = ["ip", "ip6", "inet", "arp", "bridge", "netdev"]
    nft(ns, "-f", "-", script="".join(f"add table {f} cniscope_{f}\n" for f in families)
        + "".join(f"add table ip many{i}\n" for i in range(1500)))   # ~90 KiB of replies: several reads
    got = [(NFPROTO.get(fam, str(fam)), name) for fam, name in netlink.nft_tables(path)]
    listed = [tuple(line.split()[1:3]) for line in nft(ns, "list", "tables").splitlines() if line.startswith("table ")]
    assert sorted(got) == sorted(listed)
    assert len(got) == 1506
    assert {f for f, name in got if name.startswith("cniscope_")} == set(families)
