"""Parameters declared once: conversion, bounds and unknown names."""

from __future__ import annotations

import pytest

from cniscope.core.errors import ValidationError
from cniscope.core.probespec import SPECS, spec_for


def test_defaults_fill_in() -> None:
    v = spec_for("rtt").params.validate({})
    assert v["count"] == 10
    assert v["interval"] == 0.2


def test_caps_refuse_before_anything_runs() -> None:
    with pytest.raises(ValidationError, match="above the cap"):
        spec_for("tcp").params.validate({"duration": "600"})
    with pytest.raises(ValidationError, match="below the minimum"):
        spec_for("rtt").params.validate({"count": "0"})


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "1e999"])
def test_non_finite_floats_are_refused(raw: str) -> None:
    with pytest.raises(ValidationError):
        spec_for("rtt").params.validate({"interval": raw})


def test_unknown_parameter_and_kind() -> None:
    with pytest.raises(ValidationError, match="unknown parameter"):
        spec_for("rtt").params.validate({"bogus": "1"})
    with pytest.raises(ValidationError, match="unknown probe kind"):
        spec_for("carrier-pigeon")


def test_bool_and_choice() -> None:
    tcp = spec_for("tcp").params
    assert tcp.validate({"reverse": "yes"})["reverse"] is True
    with pytest.raises(ValidationError):
        tcp.validate({"reverse": "maybe"})
    with pytest.raises(ValidationError, match="one of"):
        spec_for("dns").params.validate({"rdtype": "MX"})


def test_every_default_is_within_its_own_bounds() -> None:
    for spec in SPECS.values():
        spec.params.validate({})
