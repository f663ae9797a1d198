"""A table drawn with Textual's Line API, for many rows whose values change all the time.

One rendered Strip is kept per row and redrawn only when that row's cells change. Cells come from a
function and are asked for only when a row is on screen: a row off screen whose data changed just
forgets its cells and strip. Column widths start at each column's declared width and only grow, when
a drawn value is wider (up to the column's cap), never on a refresh.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.cells import cell_len
from rich.segment import Segment
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

Cell = str | Text
CellsFn = Callable[[str], Sequence[Cell]]
GAP = 1  # blank columns before each cell


@dataclass(frozen=True)
class ColumnSpec:
    key: str
    label: str
    width: int          # initial width; grows to fit wider values
    max_width: int = 0  # 0: no cap; wider values are cut with an ellipsis
    right: bool = False  # right-aligned: the header and plain values (a Text's own justify wins)


def _width(cell: Cell) -> int:
    return cell.cell_len if isinstance(cell, Text) else cell_len(cell)


class ColumnWidths:
    """Each column's width: its declared width (at least its label's), grown to fit a wider value
    up to the column's cap, never shrunk."""

    def __init__(self, columns: Sequence[ColumnSpec]) -> None:
        self.columns = tuple(columns)
        self.values = [max(c.width, cell_len(c.label)) for c in self.columns]

    def fit(self, i: int, width: int) -> bool:
        """Grow column ``i`` to ``width`` (within its cap); whether it grew."""
        cap = self.columns[i].max_width
        if cap:
            width = min(width, cap)
        if width > self.values[i]:
            self.values[i] = width
            return True
        return False

    def fit_cells(self, cells: Sequence[Cell]) -> bool:
        grew = False
        for i, cell in enumerate(cells):
            grew = self.fit(i, _width(cell)) or grew
        return grew

    @property
    def total(self) -> int:
        return sum(self.values) + GAP * (len(self.values) + 1)

    def line(self, cells: Sequence[Cell]) -> Text:
        """One row laid out: each cell cut to its column (with an ellipsis) and padded, right-aligned
        where the column or the cell's own justify says so."""
        line = Text(end="", no_wrap=True)
        for cell, width, col in zip(cells, self.values, self.columns, strict=False):
            text = Text(cell) if isinstance(cell, str) else cell
            if text.cell_len > width:
                text = text.copy()
                text.truncate(width, overflow="ellipsis")
            pad = " " * (GAP + width - text.cell_len)
            if text.justify == "right" or (col.right and text.justify in (None, "default")):
                line.append(pad)
                line.append_text(text)
            else:
                line.append(" " * GAP)
                line.append_text(text)
                line.append(pad[GAP:])
        line.append(" " * GAP)
        return line


class TableMessage(Message):
    """A message from a :class:`LiveTable`; its ``control`` is the table."""

    def __init__(self, table: LiveTable) -> None:
        super().__init__()
        self.table = table

    @property
    def control(self) -> LiveTable:
        return self.table


class LiveTable(ScrollView, can_focus=True):
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "livetable--header", "livetable--cursor", "livetable--even-row", "livetable--odd-row",
    }
    DEFAULT_CSS = """
    LiveTable {
        background: $surface;
        color: $foreground;
        &:focus {
            background-tint: $foreground 5%;
            & > .livetable--cursor {
                background: $block-cursor-background;
                color: $block-cursor-foreground;
                text-style: $block-cursor-text-style;
            }
            & > .livetable--header { background-tint: $foreground 5%; }
        }
        & > .livetable--header { text-style: bold; background: $panel; color: $foreground; }
        &:ansi > .livetable--header { background: ansi_bright_blue; color: ansi_default; }
        & > .livetable--even-row { background: $surface-lighten-1 50%; }
        &:dark > .livetable--even-row { background: $surface-darken-1 40%; }
        & > .livetable--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select", "Select", show=False),
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "cursor_to(0)", "First", show=False),
        Binding("end", "cursor_to(-1)", "Last", show=False),
    ]

    class Selected(TableMessage):
        """Enter (or a click on the cursor row) on a row."""

        def __init__(self, table: LiveTable, key: str) -> None:
            super().__init__(table)
            self.key = key

    class HeaderSelected(TableMessage):
        """A click on a column's header."""

        def __init__(self, table: LiveTable, column: str) -> None:
            super().__init__(table)
            self.column = column

    def __init__(self, columns: Sequence[ColumnSpec], cells: CellsFn, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.columns = tuple(columns)
        self._labels = [c.label for c in self.columns]
        self._widths = ColumnWidths(self.columns)
        self._cells_of = cells
        self._keys: list[str] = []
        self._index: dict[str, int] = {}
        self._cells: dict[str, tuple[Cell, ...]] = {}
        self._strips: dict[str, Strip] = {}
        self._header: Strip | None = None
        self.cursor_row = 0
        self.rows_drawn = 0   # rows rendered through Rich since the start (cache misses)

    # ---- rows ------------------------------------------------------------------------------
    @property
    def row_count(self) -> int:
        return len(self._keys)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self._keys)

    @property
    def cursor_key(self) -> str | None:
        return self._keys[self.cursor_row] if self._keys else None

    def cells(self, key: str) -> tuple[Cell, ...] | None:
        """The cells last drawn for a row, None when it holds none now."""
        return self._cells.get(key)

    def set_rows(self, keys: Sequence[str]) -> None:
        """Show these rows in this order (one bulk load); cached rows keep their strips."""
        if len(keys) == len(self._keys) and list(keys) == self._keys:
            return
        self._keys = list(keys)
        self._index = {k: i for i, k in enumerate(self._keys)}
        self.cursor_row = max(0, min(self.cursor_row, len(self._keys) - 1))
        self._resize()
        self.refresh()

    def on_screen(self) -> range:
        """Indices of the rows on screen now."""
        top = int(self.scroll_y)
        height = max(0, self.scrollable_content_region.height - 1)
        return range(top, min(len(self._keys), top + height))

    def invalidate(self, keys: Iterable[str]) -> None:
        """These rows' data changed: rows on screen are redrawn if their cells differ, others forget."""
        shown = self.on_screen()
        grew = False
        for key in keys:
            i = self._index.get(key)
            if i is None or i not in shown:
                self._cells.pop(key, None)
                self._strips.pop(key, None)
                continue
            cells = tuple(self._cells_of(key))
            if cells == self._cells.get(key):
                continue
            self._cells[key] = cells
            self._strips.pop(key, None)
            grew = self._widths.fit_cells(cells) or grew
            self.refresh_line(i + 1)
        if grew:
            self._relayout()

    def invalidate_all(self) -> None:
        self.invalidate(self._keys)
        kept = set(self._keys)
        for gone in [k for k in self._cells if k not in kept]:
            self._cells.pop(gone, None)
            self._strips.pop(gone, None)

    # ---- columns ---------------------------------------------------------------------------
    def set_label(self, column: str, label: str) -> None:
        i = next(n for n, c in enumerate(self.columns) if c.key == column)
        if self._labels[i] != label:
            self._labels[i] = label
            self._header = None
            self.refresh_line(int(self.scroll_y))  # the header: the first line on screen
            if self._widths.fit(i, cell_len(label)):
                self._relayout()

    def grow(self, column: str, width: int) -> None:
        """Make sure a column is at least ``width`` wide (within its cap)."""
        i = next(n for n, c in enumerate(self.columns) if c.key == column)
        if self._widths.fit(i, width):
            self._relayout()

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(self._widths.values)

    def _relayout(self, after_frame: bool = False) -> None:
        """A column grew: every strip is the wrong width now (``after_frame``: found while drawing,
        so the redraw follows this frame)."""
        self._strips.clear()
        self._header = None
        self._resize()
        if after_frame:
            self.call_after_refresh(self.refresh)
        else:
            self.refresh()

    def _resize(self) -> None:
        self.virtual_size = Size(self._widths.total, len(self._keys) + 1)

    # ---- drawing ---------------------------------------------------------------------------
    def _draw_row(self, cells: Sequence[Cell]) -> Strip:
        line = self._widths.line(cells)
        return Strip(line.render(self.app.console), line.cell_len)

    def _row_strip(self, key: str) -> Strip:
        strip = self._strips.get(key)
        if strip is None:
            cells = self._cells.get(key)
            if cells is None:
                cells = self._cells[key] = tuple(self._cells_of(key))
                if self._widths.fit_cells(cells):  # drawn mid-frame: the rest follows on the next one
                    self._relayout(after_frame=True)
            strip = self._strips[key] = self._draw_row(cells)
            self.rows_drawn += 1
        return strip

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        base = self.rich_style
        if y == 0:
            if self._header is None:
                self._header = self._draw_row(self._labels)
            style = base + self.get_component_rich_style("livetable--header")
            return self._header.apply_style(style).crop_extend(scroll_x, scroll_x + width, style)
        i = y - 1 + scroll_y
        if i >= len(self._keys):
            return Strip.blank(width, base)
        strip = self._row_strip(self._keys[i])
        if i == self.cursor_row:
            cursor = self.get_component_rich_style("livetable--cursor")
            style = base + cursor
            strip = Strip(Segment.apply_style(strip.apply_style(base), post_style=cursor), strip.cell_length)
        else:
            style = base + self.get_component_rich_style("livetable--odd-row" if i % 2 else "livetable--even-row")
            strip = strip.apply_style(style)
        return strip.crop_extend(scroll_x, scroll_x + width, style)

    # ---- cursor ----------------------------------------------------------------------------
    def move_cursor(self, row: int) -> None:
        if not self._keys:
            return
        row = max(0, min(row, len(self._keys) - 1))
        old, self.cursor_row = self.cursor_row, row
        if old != row:
            self.refresh_line(old + 1)
            self.refresh_line(row + 1)
        height = max(1, self.scrollable_content_region.height - 1)
        top = int(self.scroll_y)
        if row < top:
            self.scroll_to(y=row, animate=False)
        elif row >= top + height:
            self.scroll_to(y=row - height + 1, animate=False)

    def action_cursor(self, step: int) -> None:
        self.move_cursor(self.cursor_row + step)

    def action_page(self, direction: int) -> None:
        self.move_cursor(self.cursor_row + direction * max(1, self.scrollable_content_region.height - 2))

    def action_cursor_to(self, row: int) -> None:
        self.move_cursor(row if row >= 0 else len(self._keys) - 1)

    def action_select(self) -> None:
        key = self.cursor_key
        if key is not None:
            self.post_message(self.Selected(self, key))

    def on_click(self, event: events.Click) -> None:
        if event.y == 0:
            x = event.x + int(self.scroll_x)
            edge = 0
            for col, width in zip(self.columns, self._widths.values, strict=True):
                edge += GAP + width
                if x < edge:
                    self.post_message(self.HeaderSelected(self, col.key))
                    return
            return
        row = event.y - 1 + int(self.scroll_y)
        if 0 <= row < len(self._keys):
            if row == self.cursor_row:
                self.action_select()
            else:
                self.move_cursor(row)
