"""Parameters declared once, as data: name, type, default, bounds, help.

The same table renders CLI options, TUI form fields and validates requests on the collector and
the agent, so a cap cannot differ between the places that enforce it. Text is parsed once, where it
enters a process (:meth:`ParamSet.validate`); from there on the values travel as a typed
:class:`ParamValues`, and only the wire carries strings again (:meth:`ParamValues.to_wire`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from cniscope.core.errors import ValidationError

ParamType = Literal["int", "float", "bool", "str", "choice"]
Value = int | float | bool | str

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Param:
    name: str
    type: ParamType
    default: Value
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    unit: str = ""
    max_len: int = 253

    def parse(self, raw: str | Value) -> Value:
        """Convert and bound-check one value; raises ValidationError with the parameter's name."""
        name = self.name
        try:
            if self.type == "int":
                if isinstance(raw, bool):
                    raise ValueError(raw)
                v: Value = int(raw) if not isinstance(raw, float) or raw.is_integer() else _bad()
            elif self.type == "float":
                if isinstance(raw, bool):
                    raise ValueError(raw)
                v = float(raw)
                if not math.isfinite(v):
                    raise ValidationError(f"{name}: must be a finite number, got {raw!r}")
            elif self.type == "bool":
                if isinstance(raw, bool):
                    v = raw
                else:
                    s = str(raw).strip().lower()
                    if s in _TRUE:
                        v = True
                    elif s in _FALSE:
                        v = False
                    else:
                        raise ValueError(raw)
            elif self.type == "choice":
                v = str(raw)
                if v not in self.choices:
                    raise ValidationError(f"{name}: must be one of {', '.join(self.choices)}, got {raw!r}")
            else:
                v = str(raw)
                if len(v) > self.max_len:
                    raise ValidationError(f"{name}: longer than {self.max_len} characters")
        except ValidationError:
            raise
        except (TypeError, ValueError):
            raise ValidationError(f"{name}: expected {self.type}, got {raw!r}") from None
        if isinstance(v, int | float) and not isinstance(v, bool):
            unit = f" {self.unit}" if self.unit else ""
            if self.min is not None and v < self.min:
                raise ValidationError(f"{name}: {v}{unit} is below the minimum {_fmt(self.min)}{unit}")
            if self.max is not None and v > self.max:
                raise ValidationError(f"{name}: {v}{unit} is above the cap {_fmt(self.max)}{unit}")
        return v

    def describe(self) -> str:
        bits = [self.help]
        if self.min is not None or self.max is not None:
            bits.append(f"[{_fmt(self.min) if self.min is not None else ''}..{_fmt(self.max) if self.max is not None else ''}]")
        if self.choices:
            bits.append("{" + ",".join(self.choices) + "}")
        bits.append(f"(default {self.default}{' ' + self.unit if self.unit else ''})")
        return " ".join(bits)


def _bad() -> int:
    raise ValueError("not an integer")


def _fmt(x: float | None) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else str(x)


@dataclass(frozen=True)
class ParamSet:
    params: tuple[Param, ...] = field(default_factory=tuple)

    def __iter__(self) -> Iterator[Param]:
        return iter(self.params)

    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def get(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def validate(self, raw: Mapping[str, str | Value]) -> ParamValues:
        """Every value converted and bounded — the defaults too, so a default outside its own bounds
        is refused like a typed-in value; unknown names refused."""
        known = {p.name: p for p in self.params}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ValidationError(
                f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(known) or 'none'}"
            )
        return ParamValues(self, {p.name: p.parse(raw[p.name] if p.name in raw else p.default)
                                  for p in self.params})


class ParamValues(Mapping[str, Value]):
    """One request's parameters, parsed and bounded by their :class:`ParamSet`; read them typed."""

    __slots__ = ("_params", "_values")

    def __init__(self, params: ParamSet, values: Mapping[str, Value]) -> None:
        self._params = params
        self._values = dict(values)

    def __getitem__(self, name: str) -> Value:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"ParamValues({self._values!r})"

    def _typed(self, name: str, kinds: tuple[type, ...], want: str) -> Value:
        v = self._values[name]
        if isinstance(v, bool) and bool not in kinds or not isinstance(v, kinds):
            raise TypeError(f"parameter {name} is {type(v).__name__}, not {want}")
        return v

    def integer(self, name: str) -> int:
        return int(self._typed(name, (int,), "an integer"))

    def number(self, name: str) -> float:
        return float(self._typed(name, (int, float), "a number"))

    def flag(self, name: str) -> bool:
        return bool(self._typed(name, (bool,), "a flag"))

    def text(self, name: str) -> str:
        return str(self._typed(name, (str,), "text"))

    def replace(self, **changes: str | Value) -> ParamValues:
        """A copy with ``changes`` parsed and bounded by the same parameters."""
        return self._params.validate({**self._values, **changes})

    def to_wire(self) -> dict[str, str]:
        """The values as the API carries them (booleans as ``true``/``false``)."""
        return {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in self._values.items()}
