"""Screens reach the app only through ScreenHost: the app is one (checked by mypy here), and every
screen's host is the running app itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tui_kit as kit  # type: ignore[import-not-found]

from cniscope.tui.screen_host import ScreenHost
from cniscope.tui.screens.screen_frame import CniscopeScreen


async def test_every_screen_is_hosted_by_the_app() -> None:
    app = kit.replay_app(kit.LAB)
    host: ScreenHost = app            # the app provides everything a screen may ask for
    async with app.run_test(size=(160, 45)) as pilot:
        await kit.settle(pilot)
        seen: list[Any] = []
        for key in ("1", "2", "3", "4", "5"):
            await pilot.press(key)
            await pilot.pause()
            assert isinstance(app.screen, CniscopeScreen)
            seen.append(app.screen.capp)
        assert all(s is host for s in seen)
        assert host.client.address == f"replay:{Path(kit.LAB).name}"
