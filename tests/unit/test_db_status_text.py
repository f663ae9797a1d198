"""How the TUI's top bar words the collector's database figures."""

from __future__ import annotations

import pytest

from cniscope.api.v1 import cluster_pb2
from cniscope.tui.widgets.cluster_bar import db_text, duration_text, size_text

MIB = 1024 * 1024
GIB = 1024 * MIB


def _st(db: int, bound: int = 0, ttf: float | None = None) -> cluster_pb2.StorageStatus:
    st = cluster_pb2.StorageStatus(db_bytes=db, max_bytes=bound)
    if ttf is not None:
        st.time_to_full_seconds = ttf
    return st


@pytest.mark.parametrize(("n", "want"), [(0, "0 B"), (512, "512 B"), (9728, "9.5 KiB"), (412 * MIB, "412 MiB"),
                                         (1536 * MIB, "1.5 GiB"), (3 * 1024 * GIB, "3.0 TiB")])
def test_sizes_in_binary_units(n: int, want: str) -> None:
    assert size_text(n) == want


@pytest.mark.parametrize(("s", "want"), [(45, "45 s"), (720, "12 min"), (5 * 3600, "5 h"), (3 * 86400, "3 d")])
def test_durations_coarse(s: float, want: str) -> None:
    assert duration_text(s) == want


def test_size_bound_and_time_to_full() -> None:
    assert db_text(_st(412 * MIB, 1536 * MIB, 3 * 86400)) == ("db 412 MiB / 1.5 GiB · full in 3 d", False)


def test_unknown_time_to_full_says_nothing_of_it() -> None:
    assert db_text(_st(412 * MIB, 1536 * MIB)) == ("db 412 MiB / 1.5 GiB", False)


def test_no_bound_shows_the_size_alone() -> None:
    assert db_text(_st(412 * MIB)) == ("db 412 MiB", False)
    assert db_text(_st(412 * MIB, 0, 7200)) == ("db 412 MiB · full in 2 h", True)


def test_a_warning_when_full_within_a_day_or_past_90_percent() -> None:
    assert db_text(_st(100 * MIB, GIB, 23 * 3600))[1] is True
    assert db_text(_st(100 * MIB, GIB, 86400))[1] is False
    assert db_text(_st(int(0.91 * GIB), GIB)) == ("db 932 MiB / 1.0 GiB", True)
    assert db_text(_st(int(0.89 * GIB), GIB))[1] is False


def test_at_the_bound_the_oldest_data_is_pruned() -> None:
    assert db_text(_st(GIB, GIB, 0)) == ("db 1.0 GiB / 1.0 GiB · full, pruning the oldest", True)
