"""An N×N colour heatmap of a per-pair figure with a legend; old cells fade; arrow keys select."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

# green → red, perceptually ordered; one colour per legend bin
PALETTE = ("#1a9850", "#66bd63", "#a6d96a", "#fee08b", "#fdae61", "#f46d43", "#d73027")
FRESH_S = 60.0      # younger than this: full colour
OLD_S = 600.0       # older than this: greyed out


@dataclass(frozen=True)
class Cell:
    value: float | None     # None: the probe failed
    age_s: float


def bins(values: Sequence[float]) -> list[float]:
    """Upper edges of len(PALETTE) equal-width bins over the observed range."""
    if not values:
        return []
    lo, hi = min(values), max(values)
    if hi <= lo:
        hi = lo + 1.0
    step = (hi - lo) / len(PALETTE)
    return [lo + step * (i + 1) for i in range(len(PALETTE))]


def colour(value: float, edges: Sequence[float], higher_better: bool) -> str:
    i = next((n for n, e in enumerate(edges) if value <= e), len(edges) - 1)
    return PALETTE[len(PALETTE) - 1 - i] if higher_better else PALETTE[i]


class Heatmap(Widget, can_focus=True):
    DEFAULT_CSS = "Heatmap { height: auto; width: 1fr; }"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(0,-1)", "↑", show=False), Binding("down", "move(0,1)", "↓", show=False),
        Binding("left", "move(-1,0)", "←", show=False), Binding("right", "move(1,0)", "→", show=False),
        Binding("enter", "select", "Pair history"),
    ]
    cursor: reactive[tuple[int, int]] = reactive((1, 0))

    class Selected(Message):
        def __init__(self, source: str, target: str) -> None:
            super().__init__()
            self.source, self.target = source, target

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.names: list[str] = []
        self.cells: Mapping[tuple[str, str], Cell] = {}
        self.fmt: Callable[[float], str] = lambda v: f"{v:.0f}"
        self.unit = ""
        self.higher_better = False

    def set_data(self, names: list[str], cells: Mapping[tuple[str, str], Cell], *,
                 fmt: Callable[[float], str], unit: str, higher_better: bool) -> None:
        self.names, self.cells, self.fmt = names, cells, fmt
        self.unit, self.higher_better = unit, higher_better
        x, y = self.cursor
        n = max(1, len(names))
        self.cursor = (min(x, n - 1), min(y, n - 1))
        self.refresh(layout=True)

    def selected(self) -> tuple[str, str] | None:
        x, y = self.cursor
        if 0 <= x < len(self.names) and 0 <= y < len(self.names):
            return self.names[y], self.names[x]
        return None

    def action_move(self, dx: int, dy: int) -> None:
        n = len(self.names)
        if n:
            x, y = self.cursor
            self.cursor = ((x + dx) % n, (y + dy) % n)

    def watch_cursor(self) -> None:
        self.refresh()
        sel = self.selected()
        if sel is not None:
            self.post_message(self.Selected(*sel))

    def action_select(self) -> None:
        sel = self.selected()
        if sel is not None:
            self.post_message(self.Selected(*sel))

    def _geometry(self) -> tuple[int, int]:
        label = max(10, min(14, max((len(n) for n in self.names), default=4)) + 1)
        avail = max(10, (self.size.width or 120) - label)
        cw = max(2, min(7, avail // max(1, len(self.names))))
        return label, cw

    def get_content_height(self, container: object, viewport: object, width: int) -> int:
        return len(self.names) + 4

    def render(self) -> Text:
        return self.render_text()

    def render_text(self) -> Text:
        names = self.names
        if not names:
            return Text("no nodes yet", style="dim")
        label, cw = self._geometry()
        values = [c.value for c in self.cells.values() if c.value is not None]
        edges = bins(values)
        cx, cy = self.cursor
        out = Text(no_wrap=True, overflow="crop")
        out.append("from \\ to".ljust(label)[:label], style="dim")
        for i, n in enumerate(names):
            head = n[-(cw - 1):] if cw >= 5 else str(i % 100).rjust(cw - 1)
            out.append(head.rjust(cw), style="bold" if i == cx else "dim")
        out.append("\n")
        dim_age = Style(dim=True)
        for y, src in enumerate(names):
            out.append(src[:label - 1].ljust(label), style="bold" if y == cy else "")
            for x, dst in enumerate(names):
                cursor = (x, y) == (cx, cy)
                if x == y:
                    out.append("·".rjust(cw), style="reverse" if cursor else "dim")
                    continue
                c = self.cells.get((src, dst))
                if c is None:
                    txt, st = " " * (cw - 1) + "·", Style(color="grey35")
                elif c.value is None:
                    txt, st = ("err" if cw >= 4 else "✗").rjust(cw), Style(color="white", bgcolor="red3")
                else:
                    shown = self.fmt(c.value) if cw >= 4 else ""
                    bg = colour(c.value, edges, self.higher_better)
                    if c.age_s > OLD_S:
                        st = Style(color="grey70", bgcolor="grey23")
                    else:
                        st = Style(color="black", bgcolor=bg)
                        if c.age_s > FRESH_S:
                            st += dim_age
                    txt = (shown[:cw - 1] + " ").rjust(cw)
                if cursor:
                    st += Style(reverse=True, bold=True)
                out.append(txt, style=st)
            out.append("\n")
        out.append(self.legend(edges, values))
        return out

    def legend(self, edges: Sequence[float], values: Sequence[float]) -> Text:
        t = Text(no_wrap=True, overflow="crop")
        if not edges:
            t.append(f"no measurements yet ({self.unit})", style="dim")
            return t
        lo = min(values)
        t.append(f"{self.unit}: ", style="dim")
        prev = lo
        for i, e in enumerate(edges):
            bg = colour(e, edges, self.higher_better) if i < len(edges) else PALETTE[-1]
            t.append(f" {self.fmt(prev)}–{self.fmt(e)} ", style=Style(color="black", bgcolor=bg))
            prev = e
        t.append("\nfaded: older than 1 min · grey: older than 10 min · ", style="dim")
        t.append("err", style=Style(color="white", bgcolor="red3"))
        t.append(" failed", style="dim")
        return t
