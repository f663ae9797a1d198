"""How every screen looks, from recordings, at 120×40 and 200×60, with the clock frozen.

Recordings carry fixed timestamps and probe ids and the app's clock is pinned to 5 s after the newest
one, so the pictures hold no wall-clock time and no random id. Update with ``--snapshot-update`` after
checking the new picture by eye.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tui_kit as kit  # type: ignore[import-not-found]

SIZES = [pytest.param((120, 40), id="120x40"), pytest.param((200, 60), id="200x60")]
Snap = Callable[..., bool]


@pytest.mark.parametrize("size", SIZES)
def test_nodes(snap_compare: Snap, size: tuple[int, int]) -> None:
    """Nodes of the real 4-node lab: four 'connected' rows, agent CPU sparklines, kube-proxy 'none',
    native XDP 'yes', RTT p50 to peers in µs, zero drops; the bar says 'nodes 4/4' and '● connected';
    the last probe panel and the key footer sit below."""
    assert snap_compare(kit.replay_app(kit.LAB), terminal_size=size, run_before=kit.before())


@pytest.mark.parametrize("size", SIZES)
def test_nodes_thousand_sorted_by_cpu(snap_compare: Snap, size: tuple[int, int]) -> None:
    """1,000 generated nodes sorted by CNI CPU (▼ on that header, highest first): the bar shows
    'cilium 1.16.5', 'kube-proxy none' and the connected count; MAP% and NAT filled in."""
    assert snap_compare(kit.replay_app(kit.BIG), terminal_size=size, run_before=kit.before("s", "s"))


@pytest.mark.parametrize("size", SIZES)
def test_node_detail(snap_compare: Snap, size: tuple[int, int]) -> None:
    """node1's detail: overview (status, IPs, kernel, skew, RTT p50), readiness with ✓/✗/? and the
    missing fq and kprobes as ✗, the inspection units with their times and the summary each states
    ("nft 4 rules, kube-proxy none"), interfaces (veth native XDP),
    BPF maps with fill bars, the nft census, a tracer note and the footprint."""
    assert snap_compare(kit.replay_app(kit.LAB), terminal_size=size, run_before=kit.before("enter"))


@pytest.mark.parametrize("size", SIZES)
def test_mesh(snap_compare: Snap, size: tuple[int, int]) -> None:
    """4×4 RTT p50 heatmap (host path) with coloured cells, '·' on the diagonal, a legend of seven
    µs bins, and the selected pair node1 → node3's history on the right."""
    assert snap_compare(kit.replay_app(kit.LAB), terminal_size=size, run_before=kit.before("2", "right"))


@pytest.mark.parametrize("size", SIZES)
def test_mesh_thousand_pod_path(snap_compare: Snap, size: tuple[int, int]) -> None:
    """The generated cluster's pod-path mesh, opened straight on the pod path because only it has
    measurements: a 20×20 block of measured pairs at the top left, some 'err' cells, faded/grey
    cells for old results, unmeasured pairs as '·'."""
    assert snap_compare(kit.replay_app(kit.BIG), terminal_size=size, run_before=kit.before("2"))


@pytest.mark.parametrize("size", SIZES)
def test_probes(snap_compare: Snap, size: tuple[int, int]) -> None:
    """Probes from the lab recording: every row finished 'ok' with a full progress bar and p50/p99/
    loss; the detail panel shows the highlighted probe's figures and says that the 9 background mesh
    probes are hidden ('m' shows them)."""
    assert snap_compare(kit.replay_app(kit.LAB), terminal_size=size, run_before=kit.before("3"))


@pytest.mark.parametrize("size", SIZES)
def test_probe_form(snap_compare: Snap, size: tuple[int, int]) -> None:
    """The probe form over the nodes screen: kind rtt, from node1, to node2, path host, and the rtt
    parameters (count, interval, size, timeout) with defaults as placeholders and bounds as help."""
    assert snap_compare(kit.replay_app(kit.LAB), terminal_size=size, run_before=kit.before("p"))


@pytest.mark.parametrize("size", SIZES)
def test_runs_compare(snap_compare: Snap, size: tuple[int, int], tmp_path: Path) -> None:
    """Runs A (VPC CNI) and E (Cilium ENI + tuning) both marked ✓ and compared: TCP 'within noise',
    UDP loss, RTT p50 (−35.9%) and HTTP p99 in green as improvements."""
    app: Any = kit.replay_app(kit.LAB, extra=kit.RUNS, tmp=tmp_path)
    assert snap_compare(app, terminal_size=size, run_before=kit.before("4", "space", "down", "space", "c"))


@pytest.mark.parametrize("size", SIZES)
def test_runs_unavailable(snap_compare: Snap, size: tuple[int, int]) -> None:
    """A collector without a runs API: the Runs screen says 'no runs API on this collector'."""
    assert snap_compare(kit.replay_app(kit.LAB), terminal_size=size, run_before=kit.before("4"))


@pytest.mark.parametrize("size", SIZES)
def test_log(snap_compare: Snap, size: tuple[int, int]) -> None:
    """The collector's log from the generated cluster: three lines with UTC times, levels and node
    names (agent connected, disconnected, spool dropped)."""
    assert snap_compare(kit.replay_app(kit.BIG), terminal_size=size, run_before=kit.before("5"))
