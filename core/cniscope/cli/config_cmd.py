"""Settings on the command line, generated from the typed config: every setting of ``AgentConfig`` /
``CollectorConfig`` is a flag of ``cniscope agent`` / ``cniscope collector`` whose help names its
``CNISCOPE_*`` variable, default and unit; ``cniscope config show`` prints the effective values and
where each came from (default, environment, flag), secrets redacted."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, TypeVar

from cniscope.core import config as C
from cniscope.core.errors import ConfigError

T = TypeVar("T")

ROLES: dict[str, type[Any]] = {"agent": C.AgentConfig, "collector": C.CollectorConfig}
METAVARS = {"s": "SECONDS", "h": "HOURS", "bytes": "BYTES", "1/s": "PER_SECOND"}


def metavar(s: C.Setting) -> str:
    if s.metavar or s.unit in METAVARS:
        return s.metavar or METAVARS[s.unit]
    if s.choices:
        return "|".join(s.choices)
    if "(file)" in s.help:
        return "FILE"
    if "HOST:PORT" in s.help or "ADDRESS" in s.help:
        return "ADDRESS"
    return {"int": "N", "float": "NUMBER"}.get(s.type, "TEXT")
PRECEDENCE = ("Every setting is also a CNISCOPE_* variable; a flag wins over the variable, the variable over "
              "the default. Secrets are never flags: ")


def _converter(s: C.Setting) -> Any:
    return {"int": int, "float": float}.get(s.type, str)


def settings_help(s: C.Setting) -> str:
    """``time between sample batches [CNISCOPE_SAMPLE_INTERVAL; default 5.0 s]``"""
    unit = f" {s.unit}" if s.unit and s.default not in ("empty",) and not s.default.startswith("not ") else ""
    return f"{s.help} [{s.env}; default {s.default}{unit}]"


def add_settings(p: argparse.ArgumentParser, cls: type[Any]) -> None:
    """One flag per setting of ``cls`` (default None: an absent flag leaves the variable or default)."""
    secrets = "; ".join(f"{k} ({v})" for k, v in C.SECRET_VARIABLES.items())
    group = p.add_argument_group("settings", PRECEDENCE + secrets + ".")
    for s in C.settings(cls):
        kwargs: dict[str, Any] = {"dest": "cfg_" + s.name, "default": None,
                                  "help": settings_help(s).replace("%", "%%")}
        if s.type == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _converter(s)
            kwargs["metavar"] = metavar(s)
            kwargs["choices"] = list(s.choices) or None
            if s.repeat:
                kwargs["action"] = "append"
        group.add_argument(s.flag, **kwargs)


def flag_values(ns: argparse.Namespace, cls: type[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in C.settings(cls):
        v = getattr(ns, "cfg_" + s.name, None)
        if v is not None and s.choices and v not in s.choices:
            raise ConfigError(f"{s.flag} must be one of {', '.join(s.choices)}, not {v!r}")
        out[s.name] = ",".join(v) if isinstance(v, list) else v
    return out


def config_from_args(ns: argparse.Namespace, cls: type[T]) -> T:
    """The effective config of a daemon. A setting given as a flag is also put into this process's
    environment under its variable, so code that reads a setting where it is used sees the same value."""
    cfg, sources = C.load_with_sources(cls, flag_values(ns, cls))
    for name, src in sources.items():
        if src == "flag":
            os.environ[C.env_name(name)] = str(getattr(cfg, name))
    return cfg


def effective(cls: type[Any], flags: dict[str, Any], env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Each setting's value and source, plus the secret variables (redacted) — what ``config show`` prints."""
    e = dict(os.environ) if env is None else env
    cfg, sources = C.load_with_sources(cls, flags, e)
    rows = [{"name": s.name, "variable": s.env, "value": getattr(cfg, s.name), "unit": s.unit,
             "source": sources[s.name]} for s in C.settings(cls)]
    for var in C.SECRET_VARIABLES:
        rows.append({"name": var.removeprefix("CNISCOPE_").lower(), "variable": var,
                     "value": "<redacted>" if e.get(var) else None, "unit": "",
                     "source": "environment" if var in e else "default"})
    return rows


def cmd_show(ns: argparse.Namespace) -> int:
    from cniscope.core.render import table

    roles = [ns.role] if ns.role else list(ROLES)
    shown = {r: effective(ROLES[r], flag_values(ns, ROLES[r]) if r == ns.role else {}) for r in roles}
    if ns.output == "json":
        print(json.dumps(shown if not ns.role else shown[ns.role], indent=2, default=str))
        return 0
    for i, (role, rows) in enumerate(shown.items()):
        if i:
            print()
        print(f"cniscope {role}: effective configuration (flag > environment > default)")
        body = [[r["name"], "(not set)" if r["value"] is None else ("''" if r["value"] == "" else str(r["value"])),
                 r["unit"], r["source"], r["variable"]] for r in rows]
        sys.stdout.write(table(["SETTING", "VALUE", "UNIT", "SOURCE", "VARIABLE"], body) + "\n")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("config", help="the agent's and collector's settings: effective values and their sources")
    csub = p.add_subparsers(dest="config_cmd", required=True)
    show = csub.add_parser("show", help="print the effective configuration and where each value came from",
                           description="Print the effective configuration of the agent or the collector (both "
                                       "when no role is named) as this environment and these flags make it, "
                                       "with the source of each value. Secrets are redacted.",
                           epilog="example: CNISCOPE_MESH_FANOUT=4 cniscope config show agent --sample-interval 2")
    roles = show.add_subparsers(dest="role", metavar="{agent,collector}")
    show.set_defaults(func=cmd_show, role=None, output="text")
    for role, cls in ROLES.items():
        rp = roles.add_parser(role, help=f"the {role}'s settings")
        rp.add_argument("-o", "--output", choices=("text", "json"), default="text")
        add_settings(rp, cls)
        rp.set_defaults(func=cmd_show)
    show.add_argument("-o", "--output", choices=("text", "json"), default="text")
