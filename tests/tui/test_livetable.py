"""The Line-API table: a row is drawn once and again only when its cells change, rows off screen are
drawn when they scroll in, widths only grow; cursor, Enter and header clicks."""

from __future__ import annotations

from textual.app import App, ComposeResult

from cniscope.tui.widgets.livetable import ColumnSpec, LiveTable

N = 200


class TableApp(App[None]):
    def __init__(self) -> None:
        super().__init__()
        self.data = {f"r{i}": [f"r{i}", str(i)] for i in range(N)}
        self.asked: list[str] = []
        self.selected: list[str] = []
        self.headers: list[str] = []

    def cells(self, key: str) -> list[str]:
        self.asked.append(key)
        return self.data[key]

    def compose(self) -> ComposeResult:
        yield LiveTable([ColumnSpec("name", "NAME", 4, max_width=6), ColumnSpec("value", "VALUE", 5, right=True)],
                        self.cells, id="t")

    def on_mount(self) -> None:
        self.query_one(LiveTable).set_rows(list(self.data))
        self.query_one(LiveTable).focus()

    def on_live_table_selected(self, ev: LiveTable.Selected) -> None:
        self.selected.append(ev.key)

    def on_live_table_header_selected(self, ev: LiveTable.HeaderSelected) -> None:
        self.headers.append(ev.column)


def line(table: LiveTable, row: int) -> str:
    """What the screen shows for a row index (its line is row + 1 - scroll, under the header)."""
    return table.render_line(row + 1 - int(table.scroll_y)).text


async def test_only_changed_rows_on_screen_are_drawn_again() -> None:
    app = TableApp()
    async with app.run_test(size=(30, 12)) as pilot:
        await pilot.pause()
        table = app.query_one(LiveTable)
        shown = table.on_screen()
        assert len(shown) == 11                     # 12 lines less the header
        assert table.rows_drawn == len(shown)       # only the rows on screen, each once
        assert sorted(set(app.asked)) == sorted(f"r{i}" for i in shown)

        app.data["r3"] = ["r3", "333"]              # on screen
        app.data["r150"] = ["r150", "150150"]       # off screen
        app.data["r4"] = list(app.data["r4"])       # new list, same values
        before = table.rows_drawn
        table.invalidate(["r3", "r4", "r150"])
        await pilot.pause()
        assert table.rows_drawn == before + 1
        assert line(table, 3).split() == ["r3", "333"]
        assert table.cells("r150") is None          # forgotten, not computed
        assert "r150" not in app.asked

        await pilot.press("end")
        await pilot.pause()
        assert table.cursor_row == N - 1
        assert N - 1 in table.on_screen()
        await pilot.press(*["pageup"] * 5)      # 10 rows a page: the cursor on row 149, at the top
        await pilot.pause()
        assert table.cursor_row == 149
        assert 150 in table.on_screen()
        assert line(table, 150).split() == ["r150", "150150"]


async def test_widths_only_grow_and_respect_the_cap() -> None:
    app = TableApp()
    async with app.run_test(size=(40, 12)) as pilot:
        await pilot.pause()
        table = app.query_one(LiveTable)
        assert table.widths == (4, 5)
        app.data["r1"] = ["r1", "123456789"]
        table.invalidate(["r1"])
        await pilot.pause()
        assert table.widths == (4, 9)
        assert line(table, 0).split() == ["r0", "0"]    # every row redrawn at the new width
        assert len(line(table, 0).rstrip()) == len(line(table, 1).rstrip())
        app.data["r1"] = ["r1", "1"]
        table.invalidate(["r1"])
        await pilot.pause()
        assert table.widths == (4, 9)                   # never shrinks on a refresh
        app.data["r2"] = ["a-very-long-name", "2"]
        table.invalidate(["r2"])
        await pilot.pause()
        assert table.widths == (6, 9)                   # capped: the name is cut
        assert line(table, 2).split()[0] == "a-ver…"


async def test_cursor_enter_and_header_click() -> None:
    app = TableApp()
    async with app.run_test(size=(40, 12)) as pilot:
        await pilot.pause()
        table = app.query_one(LiveTable)
        await pilot.press("down", "down", "enter")
        assert app.selected == ["r2"]
        assert table.cursor_key == "r2"
        await pilot.press("pagedown")
        assert table.cursor_row > 2
        assert table.cursor_row in table.on_screen()
        await pilot.click(LiveTable, offset=(8, 0))     # " NAME" takes columns 0-4, VALUE after it
        await pilot.click(LiveTable, offset=(2, 0))
        assert app.headers == ["value", "name"]
        table.set_rows(["r9", "r8"])                    # fewer rows: the cursor stays on one
        await pilot.pause()
        assert table.cursor_key == "r8"
        await pilot.click(LiveTable, offset=(2, 1))     # a click moves the cursor …
        assert table.cursor_key == "r9"
        await pilot.click(LiveTable, offset=(2, 1))     # … and a click on the cursor row selects
        assert app.selected == ["r2", "r9"]
