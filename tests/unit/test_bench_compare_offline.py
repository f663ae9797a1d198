"""``bench compare --reference`` needs no collector; whatever does need one says so in one line with how
to start one; a comparison's first line names its baseline and why it is the baseline."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when this returns: nothing listens there


def cniscope(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "CNISCOPE_COLLECTOR": f"127.0.0.1:{_closed_port()}", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "cniscope.cli", *argv], capture_output=True, text=True, env=env,
                          timeout=60)


def test_reference_alone_needs_no_collector_and_names_the_default_baseline() -> None:
    r = cniscope("bench", "compare", "--reference", "report-2026-02")
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]
    assert first == ("baseline: A: VPC CNI (published) [report-2026-02:A] "
                     "(default: the first published scenario; choose another with --baseline RUN)")
    assert "E: Cilium ENI + tuning (published)" in r.stdout


@pytest.mark.parametrize("output", ["table", "markdown"])
def test_a_chosen_baseline_is_named_first_by_its_scenario_letter(output: str) -> None:
    r = cniscope("bench", "compare", "--reference", "report-2026-02:A,E", "--baseline", "E", "-o", output)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == \
        "baseline: E: Cilium ENI + tuning (published) [report-2026-02:E] (chosen with --baseline)"


def test_json_keeps_its_format_and_names_the_baseline_inside() -> None:
    import json

    r = cniscope("bench", "compare", "--reference", "report-2026-02:A,E", "--baseline", "E", "-o", "json")
    assert json.loads(r.stdout)["baseline"] == "report-2026-02:E"


@pytest.mark.parametrize("argv", [("bench", "compare", "some-run"), ("bench", "list"), ("nodes",)])
def test_commands_that_need_the_collector_say_so_in_one_line(argv: tuple[str, ...]) -> None:
    r = cniscope(*argv)
    assert r.returncode == 5
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "cannot reach the collector" in lines[0]
    assert "this needs a running collector: start one with `cniscope lab up`" in lines[0]
    assert "`cniscope collector`" in lines[0]


def test_compare_help_shows_baseline_with_an_example() -> None:
    r = cniscope("bench", "compare", "--help")
    assert "--baseline RUN" in r.stdout
    assert any("--baseline" in line and line.lstrip().startswith("cniscope bench compare")
               for line in r.stdout.splitlines())
    assert "(no collector needed)" in r.stdout
