"""Common frame of every screen: the cluster bar on top, the body, the key footer below.

Screens never await I/O; they read the app's model on the app's refresh tick (``sync``).
"""

from __future__ import annotations

from typing import cast

from textual.app import ComposeResult
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer

from cniscope.tui.cluster_model import ClusterModel
from cniscope.tui.screen_host import ScreenHost
from cniscope.tui.widgets.cluster_bar import ClusterBar


class CniscopeScreen(Screen[None]):
    TITLE_TEXT = ""
    _ready = False

    @property
    def capp(self) -> ScreenHost:
        return cast(ScreenHost, self.app)

    @property
    def model(self) -> ClusterModel:
        return self.capp.model

    def compose(self) -> ComposeResult:
        yield ClusterBar(id="bar")
        yield from self.compose_body()
        yield Footer()

    def compose_body(self) -> ComposeResult:
        yield from ()

    def on_screen_resume(self) -> None:
        self.sync_all()

    def on_mount(self) -> None:
        self.setup()
        self._ready = True
        self.sync_all()

    def setup(self) -> None:
        """Build what compose cannot (table columns, focus); runs once before the first sync."""

    def sync_all(self) -> None:
        if not self._ready:
            return
        try:
            bar = self.query_one(ClusterBar)
        except NoMatches:  # the screen's widgets are being removed as the app shuts down
            return
        bar.show(self.model, self.capp.client.address, self.TITLE_TEXT)
        self.sync()

    def sync(self) -> None:
        """Bring the body up to date with the model; cheap when nothing changed."""
