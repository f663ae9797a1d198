"""Command palette: every key action of the app and of the current screen, plus "open node …"."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import cast

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.command import Hit, Hits, Provider
from textual.screen import Screen

from cniscope.tui.screen_host import ScreenHost


def binding_commands(app: App[None], screen: Screen[object]) -> Iterable[SystemCommand]:
    seen: set[str] = set()
    for namespace, bindings in (("app", app.BINDINGS), ("screen", screen.BINDINGS)):
        for b in bindings:
            if not isinstance(b, Binding) or not b.description or b.action in seen:
                continue
            seen.add(b.action)
            action = b.action if "." in b.action else f"{namespace}.{b.action}"
            yield SystemCommand(b.description, f"key: {b.key_display or b.key}",
                                partial(app.run_action, action))


class NodeCommands(Provider):
    """``open node1`` jumps to a node's detail screen."""

    async def search(self, query: str) -> Hits:
        app = cast(ScreenHost, self.app)
        matcher = self.matcher(query)
        for name in sorted(app.model.nodes):
            text = f"open node {name}"
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), partial(app.open_node, name),
                          help="node detail: readiness, interfaces, maps, iptables")
