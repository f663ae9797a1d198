"""The collector process's allocator settings: applied on glibc, an environment setting kept."""

from __future__ import annotations

import ctypes

import pytest

from cniscope.collector import heap_limits

GLIBC = getattr(ctypes.CDLL(None), "mallopt", None) is not None


@pytest.mark.skipif(not GLIBC, reason="not glibc: nothing to set")
def test_both_settings_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert heap_limits.limit_heap() == ["MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_"]


def test_a_setting_from_the_environment_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert "MALLOC_ARENA_MAX" not in heap_limits.limit_heap()
