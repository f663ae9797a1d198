"""Parameters declared once: conversion, bounds, defaults, unknown names, and typed values."""

from __future__ import annotations

import pytest

from cniscope.core.errors import ValidationError
from cniscope.core.params import Param, ParamSet
from cniscope.core.probekinds import KINDS, spec_for
from cniscope.lab.impair_plan import PARAMS as IMPAIR_PARAMS


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


PRODUCT_PARAM_SETS = [(spec.kind, spec.params) for spec in KINDS] + [("lab impair", IMPAIR_PARAMS)]


@pytest.mark.parametrize(("owner", "params"), PRODUCT_PARAM_SETS, ids=[o for o, _ in PRODUCT_PARAM_SETS])
def test_every_default_is_within_its_own_bounds(owner: str, params: ParamSet) -> None:
    for p in params:
        assert p.parse(p.default) == p.default, f"{owner}.{p.name}"
    assert dict(params.validate({})) == {p.name: p.default for p in params}


def test_a_default_outside_its_bounds_is_refused_like_a_typed_in_value() -> None:
    broken = ParamSet((Param("count", "int", 0, "echo requests", min=1, max=1000),
                       Param("rdtype", "choice", "MX", "record type", choices=("A", "AAAA"))))
    with pytest.raises(ValidationError, match="count: 0 is below the minimum 1"):
        broken.validate({})
    with pytest.raises(ValidationError, match="rdtype: must be one of A, AAAA"):
        broken.validate({"count": "3"})
    assert broken.validate({"count": "3", "rdtype": "A"}).integer("count") == 3


def test_values_are_typed_once_and_strings_only_on_the_wire() -> None:
    v = spec_for("tcp").params.validate({"duration": "2", "reverse": "yes"})
    assert v.number("duration") == 2.0
    assert v.flag("reverse") is True
    assert v.integer("streams") == 1
    with pytest.raises(TypeError, match="not an integer"):
        v.integer("reverse")  # a bool is not a count
    with pytest.raises(TypeError, match="not a flag"):
        v.flag("streams")
    assert v.to_wire() == {"duration": "2.0", "streams": "1", "reverse": "true", "bbr": "false"}
    assert spec_for("tcp").params.validate(v.to_wire()) == v  # the wire form parses back to the same values


def test_replace_is_bounded_by_the_same_parameters() -> None:
    v = spec_for("dns").params.validate({})
    assert v.replace(resolver="198.18.0.3").text("resolver") == "198.18.0.3"
    assert v.text("resolver") == ""  # the original is unchanged
    with pytest.raises(ValidationError, match="count"):
        v.replace(count=0)
