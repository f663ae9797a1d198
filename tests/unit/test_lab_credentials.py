"""The CLI presents a Kubernetes lab's operator token to that lab's collector, only when the person set
no token of their own, and never for a lab without one."""

from __future__ import annotations

from pathlib import Path

import pytest

from cniscope.cli.collector_address import OPERATOR_TOKEN, lab_token, use_lab_credentials


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("CNISCOPE_TOKEN", raising=False)
    monkeypatch.delenv("CNISCOPE_TOKEN_FILE", raising=False)
    return monkeypatch


def _lab(tmp_path: Path, with_token: bool) -> Path:
    if with_token:
        (tmp_path / OPERATOR_TOKEN).parent.mkdir(parents=True)
        (tmp_path / OPERATOR_TOKEN).write_text("eyJ-operator\n")
    return tmp_path


def test_a_kubernetes_lab_token_is_presented_when_none_is_set(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    import os

    lab = _lab(tmp_path, with_token=True)
    use_lab_credentials(lab)
    assert os.environ["CNISCOPE_TOKEN_FILE"] == str(lab / OPERATOR_TOKEN)


@pytest.mark.parametrize("own", ["CNISCOPE_TOKEN", "CNISCOPE_TOKEN_FILE"])
def test_ones_own_token_wins(tmp_path: Path, clean_env: pytest.MonkeyPatch, own: str) -> None:
    import os

    clean_env.setenv(own, "mine")
    use_lab_credentials(_lab(tmp_path, with_token=True))
    assert os.environ[own] == "mine"
    assert os.environ.get("CNISCOPE_TOKEN_FILE", "mine") == "mine"


def test_a_lab_without_kubernetes_gets_no_token(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    import os

    lab = _lab(tmp_path, with_token=False)
    assert lab_token(lab) is None
    use_lab_credentials(lab)
    assert "CNISCOPE_TOKEN_FILE" not in os.environ
