"""``cniscope lab impair NODE``: known delay, loss and rate on a lab node's fabric link."""

from __future__ import annotations

import argparse
import json
from typing import Any

from cniscope.core.errors import CniscopeError


def _lab_actions(sub: Any) -> Any:
    """The ``lab`` command's ACTION subparsers, so ``impair`` sits beside up/down/status/exec."""
    lab = sub.choices["lab"]
    for action in lab._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise CniscopeError("the lab command has no actions to extend")


def register(sub: Any) -> None:
    from cniscope.lab.impair_plan import PARAMS

    p = _lab_actions(sub).add_parser(
        "impair", help="add known delay, loss or rate limit to a node's fabric link (ground truth)",
        description="Set (or with --clear remove) a node's impairment; without options, show it. "
                    "Each call replaces the node's impairment in the given direction(s).",
    )
    p.add_argument("node", help="lab node, e.g. node1")
    for prm in PARAMS.params:
        flag = "--" + prm.name.replace("_", "-")
        if prm.type == "choice":
            p.add_argument(flag, dest=prm.name, choices=list(prm.choices), default=None, help=prm.describe())
        else:
            p.add_argument(flag, dest=prm.name, default=None,
                           help=prm.describe() if prm.default != "" else prm.help)
    p.add_argument("--clear", action="store_true", help="remove every impairment from the node")
    p.add_argument("--name", default="cniscope", help="lab name (default cniscope)")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_impair)


def cmd_impair(ns: argparse.Namespace) -> int:
    from dataclasses import asdict

    from cniscope.core.errors import LabError
    from cniscope.lab import impair
    from cniscope.lab.impair_plan import PARAMS, Impairment, describe
    from cniscope.lab.lab import Lab

    lab = Lab.existing(ns.name)
    if not lab.status()["up"]:
        raise LabError(f"lab {ns.name!r} is not up (cniscope lab up --name {ns.name})")
    raw = {prm.name: getattr(ns, prm.name) for prm in PARAMS.params}
    if ns.clear:
        dirs = Impairment.parse(raw).directions() if ns.direction else None
        removed = impair.clear(lab, ns.node, directions=dirs)
        if ns.output == "json":
            print(json.dumps({"node": ns.node, "removed": removed}, indent=2))
        else:
            print(f"{ns.node}: removed {len(removed)} objects" if removed else f"{ns.node}: nothing to remove")
            for r in removed:
                print(f"  {r}")
        return 0
    imp = Impairment.parse(raw)
    if imp.empty:
        print(json.dumps(impair.show(lab, ns.node), indent=2))
        return 0
    done = impair.apply(lab, ns.node, imp)
    if ns.output == "json":
        print(json.dumps(asdict(done), indent=2))
    else:
        print(describe(done))
    return 0
