"""The CLI teaches every setting: each field of the typed config is a flag of its daemon whose help names
the CNISCOPE_* variable, default and unit; ``config show`` says where each value came from and never
prints a secret; and no CNISCOPE_* variable is read anywhere without being declared in config.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cniscope.cli import build_parser
from cniscope.cli.config_cmd import config_from_args, effective
from cniscope.core import config as C

ROOT = Path(__file__).resolve().parents[2]


def _help(*argv: str) -> str:
    out = subprocess.run([sys.executable, "-m", "cniscope.cli", *argv, "--help"], capture_output=True, text=True,
                         env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"}, check=True).stdout
    return re.sub(r"\s+", " ", out)


@pytest.mark.parametrize(("role", "cls"), [("agent", C.AgentConfig), ("collector", C.CollectorConfig)])
def test_help_lists_every_setting_with_variable_default_and_unit(role: str, cls: type[object]) -> None:
    text = _help(role)
    for s in C.settings(cls):
        unit = f" {s.unit}" if s.unit and s.default != "empty" else ""
        assert f"{s.flag} " in text, s.name
        assert f"[{s.env}; default {s.default}{unit}]" in text, s.name
    for var in C.SECRET_VARIABLES:  # named, never a flag
        assert var in text
        assert "--" + var.removeprefix("CNISCOPE_").lower() + " " not in text


def test_every_setting_has_help_and_time_sizes_and_rates_have_units() -> None:
    for cls in (C.AgentConfig, C.CollectorConfig):
        for s in C.settings(cls):
            assert s.help, s.name
            if s.type == "float" and s.name.endswith(("_interval", "_timeout", "_after", "_recheck", "_budget")):
                assert s.unit == "s", s.name
            if s.name.endswith("_bytes"):
                assert s.unit == "bytes", s.name


def test_precedence_flag_over_environment_over_default() -> None:
    ns = build_parser().parse_args(["agent", "--sample-interval", "2", "--node", "flagged"])
    env = {"CNISCOPE_SAMPLE_INTERVAL": "9", "CNISCOPE_MESH_FANOUT": "3"}
    rows = {r["name"]: r for r in effective(C.AgentConfig, {"sample_interval": 2.0, "node": "flagged"}, env)}
    assert (rows["sample_interval"]["value"], rows["sample_interval"]["source"]) == (2.0, "flag")
    assert (rows["mesh_fanout"]["value"], rows["mesh_fanout"]["source"]) == (3, "environment")
    assert (rows["spool_max_bytes"]["value"], rows["spool_max_bytes"]["source"]) == (32 * 1024 * 1024, "default")
    assert ns.cfg_sample_interval == 2.0


def test_a_flag_reaches_code_that_reads_the_setting_where_it_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    from cniscope.core.hostpaths import HostPaths

    for var in ("CNISCOPE_HOST_PROC", "CNISCOPE_KUBE_PROXY_METRICS"):  # the flags below export these:
        monkeypatch.setenv(var, "before")                               # monkeypatch undoes it afterwards
    ns = build_parser().parse_args(["agent", "--host-proc", "/host/proc", "--kube-proxy-metrics", "off"])
    cfg = config_from_args(ns, C.AgentConfig)
    assert cfg.host_proc == "/host/proc"
    assert HostPaths.from_env().proc == Path("/host/proc")
    assert C.env_value(C.AgentConfig, "kube_proxy_metrics") == "off"


def test_collector_listen_repeats_and_lab_is_unset_unless_given() -> None:
    ns = build_parser().parse_args(["collector", "--listen", "127.0.0.1:1", "--listen", "unix:///tmp/c.sock"])
    cfg, src = C.load_with_sources(C.CollectorConfig, {"listen": ",".join(ns.cfg_listen)}, {})
    assert cfg.listen.split(",") == ["127.0.0.1:1", "unix:///tmp/c.sock"]
    assert src["listen"] == "flag"
    assert cfg.lab is None
    assert C.load(C.CollectorConfig, env={"CNISCOPE_LAB": ""}).lab == ""  # '' = the default lab


def test_config_show_redacts_secrets_and_names_sources() -> None:
    env = {"PATH": "/usr/bin:/bin", "CNISCOPE_TOKEN": "s3cr3t-token-value", "CNISCOPE_STALE_AFTER": "40"}
    out = subprocess.run([sys.executable, "-m", "cniscope.cli", "config", "show", "collector", "-o", "json",
                          "--db", "/tmp/x.db"], capture_output=True, text=True, env=env, check=True).stdout
    assert "s3cr3t" not in out
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["token"] == {"name": "token", "variable": "CNISCOPE_TOKEN", "value": "<redacted>", "unit": "",
                             "source": "environment"}
    assert (rows["db"]["value"], rows["db"]["source"]) == ("/tmp/x.db", "flag")
    assert (rows["stale_after"]["value"], rows["stale_after"]["source"]) == (40.0, "environment")
    text = subprocess.run([sys.executable, "-m", "cniscope.cli", "config", "show"], capture_output=True, text=True,
                          env=env, check=True).stdout
    assert "s3cr3t" not in text
    assert "cniscope agent: effective configuration" in text
    assert "cniscope collector: effective" in text


def test_every_cniscope_variable_in_code_and_manifests_is_declared_in_config() -> None:
    declared = {s.env for cls in (C.AgentConfig, C.CollectorConfig) for s in C.settings(cls)}
    declared |= set(C.SECRET_VARIABLES) | set(C.OTHER_VARIABLES)
    found: dict[str, str] = {}
    sources = [p for root in ("agent", "collector", "core", "tui", "proto") for p in (ROOT / root).rglob("*.py")]
    sources += list((ROOT / "daemonset").rglob("*.yaml"))  # what the manifests set
    for path in sources:
        for var in re.findall(r"CNISCOPE_[A-Z0-9_]*[A-Z0-9]", path.read_text()):
            found.setdefault(var, str(path.relative_to(ROOT)))
    undeclared = {v: p for v, p in found.items() if v not in declared}
    assert not undeclared, f"CNISCOPE_* variables read but not declared in core/config.py: {undeclared}"
