"""The probe form, rendered from the probe table (``probekinds``) with the API's own bounds."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.validation import ValidationResult, Validator
from textual.widgets import Button, Input, Label, Select, Static

from cniscope.api.v1 import common_pb2
from cniscope.core.errors import ValidationError
from cniscope.core.params import Param, ParamSet
from cniscope.core.probekinds import KINDS, spec_for
from cniscope.core.probespec import PATHS


class ParamValidator(Validator):
    def __init__(self, param: Param) -> None:
        super().__init__()
        self.param = param

    def validate(self, value: str) -> ValidationResult:
        if not value.strip():
            return self.success()  # empty: the default
        try:
            self.param.parse(value.strip())
        except ValidationError as exc:
            return self.failure(str(exc))
        return self.success()


class ProbeForm(ModalScreen[common_pb2.ProbeRequest | None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "submit", "Fire"),
    ]

    def __init__(self, nodes: list[str], kind: str = "rtt", source: str | None = None,
                 target: str | None = None, path: str = "host") -> None:
        super().__init__()
        self.nodes = nodes
        self.kind = kind
        self.source = source if source in nodes else (nodes[0] if nodes else None)
        others = [n for n in nodes if n != self.source]
        self.target = target if target in nodes else (others[0] if others else None)
        self.path = path

    def compose(self) -> ComposeResult:
        with Vertical(id="form"):
            yield Static("Fire a probe", id="form-title")
            with Grid(id="form-head"):
                yield Label("kind")
                yield Select([(k, k) for k in KINDS.names()], value=self.kind,
                             allow_blank=False, id="f-kind")
                yield Label("from")
                yield Select([(n, n) for n in self.nodes], value=self.source or Select.BLANK, id="f-from")
                yield Label("to")
                yield Select([(n, n) for n in self.nodes], value=self.target or Select.BLANK, id="f-to")
                yield Label("path")
                yield Select([(p, p) for p in PATHS], value=self.path, allow_blank=False, id="f-path")
            yield Static(spec_for(self.kind).describe(), id="form-summary")
            yield VerticalScroll(id="form-params")
            yield Static("", id="form-error")
            with Horizontal(id="form-buttons"):
                yield Button("Fire (ctrl+s)", variant="primary", id="f-fire")
                yield Button("Cancel (esc)", id="f-cancel")

    async def on_mount(self) -> None:
        await self._render_params()

    def params(self) -> ParamSet:
        return spec_for(self.kind).params

    async def _render_params(self) -> None:
        box = self.query_one("#form-params", VerticalScroll)
        await box.remove_children()
        rows = []
        for p in self.params():
            inp = Input(placeholder=f"{p.default}", id=f"p-{p.name}", validators=[ParamValidator(p)],
                        classes="param-input")
            rows.append(Horizontal(Label(p.name, classes="param-name"), inp,
                                   Label(p.describe(), classes="param-help"), classes="param-row"))
        await box.mount_all(rows)

    @on(Select.Changed, "#f-kind")
    async def _kind(self, ev: Select.Changed) -> None:
        if isinstance(ev.value, str) and ev.value != self.kind:
            self.kind = ev.value
            self.query_one("#form-summary", Static).update(spec_for(self.kind).describe())
            await self._render_params()

    def build(self) -> common_pb2.ProbeRequest:
        """The request, validated with the same table the collector uses; raises ValidationError."""
        src, dst = self.query_one("#f-from", Select).value, self.query_one("#f-to", Select).value
        path = self.query_one("#f-path", Select).value
        if not isinstance(dst, str):
            if spec_for(self.kind).needs_target:
                raise ValidationError("choose a source and a target node")
            dst = ""
        if not isinstance(src, str):
            raise ValidationError("choose a source node")
        if src == dst and path != "pod":
            raise ValidationError("source and target are the same node (pick another, or the pod path)")
        raw = {}
        for p in self.params():
            v = self.query_one(f"#p-{p.name}", Input).value.strip()
            if v:
                raw[p.name] = v
        values = self.params().validate(raw)
        return common_pb2.ProbeRequest(kind=self.kind, source_node=src, target_node=dst, path=str(path),
                                       params=values.to_wire())

    def action_submit(self) -> None:
        try:
            req = self.build()
        except ValidationError as exc:
            self.query_one("#form-error", Static).update(f"✗ {exc}")
            return
        self.dismiss(req)

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#f-fire")
    def _fire(self) -> None:
        self.action_submit()

    @on(Button.Pressed, "#f-cancel")
    def _cancel(self) -> None:
        self.action_cancel()

    @on(Input.Submitted)
    def _enter(self) -> None:
        self.action_submit()
