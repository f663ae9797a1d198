"""What a probe kind is, as data: the shape of one row of the probe table (``probekinds``).

A :class:`ProbeSpec` says everything the pieces that do not run the probe need to know about it —
parameters with their caps, whether it needs a target, whether the target starts a one-off server,
whether it is a bandwidth probe, which agent features (privileges) it needs, its headline figures,
and how benchmark runs use it. The collector, the CLI and the TUI read it; the agent reads it too,
and runs the kind with the implementation registered under the same name.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from cniscope.core.errors import ValidationError
from cniscope.core.params import ParamSet, ParamValues, Value

PATHS = ("host", "pod", "service")
SUITE_NAMES = ("standard", "quick")
LOWER = "lower"
HIGHER = "higher"


@dataclass(frozen=True)
class Figure:
    """A headline figure of a probe's result: its key in ``ProbeResult.figures``, how to call it,
    its unit, and which direction is better."""

    name: str
    title: str
    unit: str
    better: str  # lower | higher


@dataclass(frozen=True)
class BenchFigure:
    """One figure of a benchmark group: metric ``<group>.<metric>`` read from result figure ``figure``.
    Title, unit and direction come from the probe's :class:`Figure` unless ``title`` says otherwise."""

    metric: str
    figure: str
    digits: int = 2
    title: str = ""


@dataclass(frozen=True)
class BenchGroup:
    """A report table filled by this probe kind, and the suite items that fill it.

    ``suites`` maps a suite name to the parameter sets one item each runs with. With ``arg_param``
    the group's metrics carry that parameter's value (``http@1000.p99``), so items with different
    values are different figures. ``path`` is where the items go: ``pod`` (pod to pod across nodes)
    or ``service`` (pod to the ClusterIP of a Service fronting the target node's probe pod).
    """

    group: str
    table: str
    figures: tuple[BenchFigure, ...]
    suites: Mapping[str, tuple[Mapping[str, Value], ...]] = field(default_factory=dict)
    arg_param: str = ""
    path: str = "pod"


@dataclass(frozen=True)
class ProbeSpec:
    kind: str
    title: str
    params: ParamSet
    figures: tuple[Figure, ...] = ()          # headline figures, most telling first
    benchmarks: tuple[BenchGroup, ...] = ()   # report tables and suite items
    needs_target: bool = True                 # False: a target is optional (dns asks a resolver)
    target_param: str = ""                    # a parameter holding a target address, checked like one
    served: bool = False                      # the target agent starts a one-off iperf3 server for it
    bandwidth: bool = False                   # it owns both nodes while it runs ...
    bandwidth_param: str = ""                 # ... or only when this bool parameter is true
    privileges: tuple[str, ...] = ()          # agent features (Linux capabilities) beyond the path's

    def __post_init__(self) -> None:
        """A row that contradicts itself is refused where it is declared, not when someone runs it."""
        names = set(self.params.names())
        if self.bandwidth_param and (self.bandwidth_param not in names
                                     or self.params.get(self.bandwidth_param).type != "bool"):
            raise ValueError(f"{self.kind}: bandwidth_param {self.bandwidth_param!r} is not a bool parameter")
        if self.target_param and self.target_param not in names:
            raise ValueError(f"{self.kind}: target_param {self.target_param!r} is not a parameter")
        figures = {f.name for f in self.figures}
        for b in self.benchmarks:
            unknown = [f.figure for f in b.figures if f.figure not in figures]
            if unknown:
                raise ValueError(f"{self.kind}: benchmark {b.group} reads undeclared figures {unknown}")
            if b.arg_param and b.arg_param not in names:
                raise ValueError(f"{self.kind}: benchmark {b.group} arg_param {b.arg_param!r} is not a parameter")
            for suite, runs in b.suites.items():
                if suite not in SUITE_NAMES:
                    raise ValueError(f"{self.kind}: unknown suite {suite!r}; one of {', '.join(SUITE_NAMES)}")
                for values in runs:
                    self.params.validate(values)  # parses the defaults as well: a bad one fails here

    def figure(self, name: str) -> Figure:
        for f in self.figures:
            if f.name == name:
                return f
        raise KeyError(f"{self.kind} declares no figure {name!r}")

    def short_run(self) -> ParamValues:
        """The parameters of its first quick-suite item, else its defaults: a short measurement."""
        for b in self.benchmarks:
            for values in b.suites.get("quick", ()):
                return self.params.validate(values)
        return self.params.validate({})

    def is_bandwidth(self, values: ParamValues) -> bool:
        return self.bandwidth or (bool(self.bandwidth_param) and values.flag(self.bandwidth_param))

    def expected_seconds(self, values: ParamValues) -> float:
        """How long the probe should take, for timeouts and progress."""
        if "duration" in values:
            return values.number("duration")
        if "count" in values and "interval" in values:
            return values.number("count") * values.number("interval")
        return 5.0

    def describe(self) -> str:
        """The title and what the kind asks of the cluster, for help texts and forms."""
        notes = []
        if not self.needs_target:
            notes.append("target optional")
        if self.served:
            notes.append("the target serves a one-off iperf3 server")
        if self.bandwidth:
            notes.append("owns both nodes while it runs")
        elif self.bandwidth_param:
            notes.append(f"with --{self.bandwidth_param.replace('_', '-')} it owns both nodes")
        return self.title + (f" ({'; '.join(notes)})" if notes else "")


class KindTable:
    """The probe kinds in declaration order. A duplicate kind is a bug and raises."""

    def __init__(self) -> None:
        self._specs: dict[str, ProbeSpec] = {}

    def register(self, spec: ProbeSpec) -> ProbeSpec:
        if spec.kind in self._specs:
            raise ValueError(f"duplicate probe kind {spec.kind!r}")
        self._specs[spec.kind] = spec
        return spec

    def unregister(self, kind: str) -> None:
        del self._specs[kind]

    def get(self, kind: str) -> ProbeSpec:
        try:
            return self._specs[kind]
        except KeyError:
            raise ValidationError(f"unknown probe kind {kind!r}; known: {', '.join(self._specs)}") from None

    def names(self) -> list[str]:
        return list(self._specs)

    def __iter__(self) -> Iterator[ProbeSpec]:
        return iter(list(self._specs.values()))

    def __contains__(self, kind: object) -> bool:
        return kind in self._specs


def validate_path(path: str) -> str:
    p = path or "host"
    if p not in PATHS:
        raise ValidationError(f"path must be one of {', '.join(PATHS)}, got {path!r}")
    return p
