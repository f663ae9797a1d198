"""The shipped Prometheus Operator overlay as data for tests: its rule groups, recording rules,
alerts and the dashboard's queries, and Debian's promtool/prometheus binaries."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

OVERLAY = Path(__file__).resolve().parents[1] / "daemonset" / "overlays" / "prometheus-operator"
RULES_FILE = "cniscope.rules.yaml"  # what prometheus-rule.test.yaml names in rule_files


def binary(name: str) -> str | None:
    """promtool or prometheus from Debian's ``prometheus`` package (scripts/host-setup.sh installs it)."""
    return shutil.which(name) or next((p for p in (f"/usr/bin/{name}",) if Path(p).exists()), None)


def rule_groups() -> list[dict[str, Any]]:
    doc = yaml.safe_load((OVERLAY / "prometheus-rule.yaml").read_text())
    assert doc["kind"] == "PrometheusRule"
    groups: list[dict[str, Any]] = doc["spec"]["groups"]
    return groups


def write_rules(directory: Path) -> Path:
    """The PrometheusRule's groups as a plain Prometheus rule file in ``directory``."""
    path = directory / RULES_FILE
    path.write_text(yaml.safe_dump({"groups": rule_groups()}, sort_keys=False))
    return path


def records() -> dict[str, str]:
    return {r["record"]: r["expr"] for g in rule_groups() for r in g["rules"] if "record" in r}


def alerts() -> dict[str, str]:
    return {r["alert"]: " ".join(r["expr"].split()) for g in rule_groups() for r in g["rules"] if "alert" in r}


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((OVERLAY / "dashboard.json").read_text())
    return data


def dashboard_queries(rate_interval: str = "1m") -> list[tuple[str, str]]:
    """(panel title, PromQL) for every panel target and query variable, Grafana's variables filled in:
    ``$node`` as its All value, ``$__rate_interval`` as ``rate_interval``."""
    dash = dashboard()
    out = []
    for var in dash["templating"]["list"]:
        if var["type"] == "query":  # label_values(SELECTOR, label): the selector must return series
            m = re.fullmatch(r"label_values\((.+),\s*\w+\)", var["query"]["query"])
            assert m, var
            out.append((f"variable {var['name']}", m.group(1)))
    all_value = {v["name"]: v.get("allValue", ".+") for v in dash["templating"]["list"]}
    for p in dash["panels"]:
        for t in p.get("targets", []):
            expr = t["expr"].replace("$__rate_interval", rate_interval)
            for name, value in all_value.items():
                expr = expr.replace("$" + name, value)
            out.append((f"{p['title']} / {t['legendFormat']}", expr))
    return out


def series_names(expr: str) -> set[str]:
    """Metric names a PromQL expression reads: identifiers that are not functions, keywords or labels."""
    keywords = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                "offset", "inf", "nan"}
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", " ", bare)
    return {m.group(1) for m in re.finditer(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()", bare)
            if m.group(1).lower() not in keywords}
