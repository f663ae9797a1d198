"""Bounds on what a people-facing request may ask for, so that no request builds an answer (or an
error) far larger than itself. Refusals name the field and the bound; inputs are quoted shortened."""

from __future__ import annotations

from cniscope.api.v1 import runs_pb2
from cniscope.collector.principals import shorten
from cniscope.core.errors import ValidationError

MAX_COMPARE_RUNS = 16     # runs side by side in one comparison
MAX_THRESHOLDS = 32       # fail_if expressions in one comparison
MAX_FIELD = 200           # characters of one run id, label, expression or name


def _field(what: str, value: str) -> None:
    if len(value) > MAX_FIELD:
        raise ValidationError(f"{what} {shorten(value)} is longer than {MAX_FIELD} characters")


def check_compare(req: runs_pb2.CompareRequest) -> None:
    if len(req.run_ids) > MAX_COMPARE_RUNS:
        raise ValidationError(f"{len(req.run_ids)} runs to compare; at most {MAX_COMPARE_RUNS} side by side")
    if len(set(req.run_ids)) != len(req.run_ids):
        seen: set[str] = set()
        twice = next(r for r in req.run_ids if r in seen or seen.add(r))  # type: ignore[func-returns-value]
        raise ValidationError(f"run {shorten(twice)} is named twice")
    if len(req.fail_if) > MAX_THRESHOLDS:
        raise ValidationError(f"{len(req.fail_if)} thresholds; at most {MAX_THRESHOLDS}")
    for r in req.run_ids:
        _field("run id", r)
    for t in req.fail_if:
        _field("threshold", t)
    for what, value in (("baseline", req.baseline), ("reference", req.reference), ("format", req.format)):
        _field(what, value)
