"""The light mesh's peer choice and staggering (pure functions)."""

from __future__ import annotations

import random
from collections import Counter

from cniscope.agent.mesh_peers import choose_peers, offsets


def test_subset_is_bounded_stable_and_excludes_self() -> None:
    nodes = [f"node{i}" for i in range(1, 201)]
    chosen = choose_peers("node7", nodes, 8)
    assert len(chosen) == 8
    assert "node7" not in chosen
    assert chosen == choose_peers("node7", list(reversed(nodes)), 8)  # order of the peer table is irrelevant


def test_small_cluster_pings_everyone() -> None:
    assert choose_peers("a", ["a", "b", "c"], 8) == ["b", "c"]
    assert choose_peers("a", ["a", "b"], 0) == []


def test_load_is_spread_so_no_node_is_hammered() -> None:
    nodes = [f"n{i}" for i in range(200)]
    incoming: Counter[str] = Counter()
    for n in nodes:
        incoming.update(choose_peers(n, nodes, 8))
    assert sum(incoming.values()) == 200 * 8  # N × fanout, not N²
    assert max(incoming.values()) <= 20       # mean 8; rendezvous hashing keeps the tail short
    assert len(incoming) >= 190               # almost every node is watched by someone


def test_adding_a_node_changes_few_choices() -> None:
    nodes = [f"n{i}" for i in range(100)]
    before = {n: set(choose_peers(n, nodes, 8)) for n in nodes}
    after = {n: set(choose_peers(n, [*nodes, "new"], 8)) for n in nodes}
    changed = sum(len(before[n] - after[n]) for n in nodes)
    assert changed <= 20  # only pairs displaced by "new" move


def test_offsets_are_staggered_within_the_round() -> None:
    rng = random.Random(1)
    offs = offsets(8, 30.0, 0.2, rng)
    assert len(offs) == 8
    assert all(0 <= o < 30 for o in offs)
    gaps = [b - a for a, b in zip(offs, offs[1:], strict=False)]
    assert min(gaps) > 30 / 8 * 0.5  # jitter never bunches two probes together

