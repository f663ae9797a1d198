"""The live terminal UI: every node, the mesh, probes, runs and the collector's log.

The app owns the model and the only connection to the collector; events are applied to the model by
a worker and screens redraw from it on a fixed tick, so a burst of events never floods the UI and no
screen ever waits on I/O.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from typing import ClassVar

from textual import work
from textual.app import App, ScreenStackError, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen

from cniscope.api.v1 import common_pb2
from cniscope.client.client_protocol import ClusterClient, ConnectionState
from cniscope.core.errors import CniscopeError
from cniscope.core.render import probe_result_text
from cniscope.tui.cluster_model import ClusterModel
from cniscope.tui.commands import NodeCommands, binding_commands
from cniscope.tui.screens.log import LogScreen
from cniscope.tui.screens.mesh import MeshScreen
from cniscope.tui.screens.node_detail import NodeDetailScreen
from cniscope.tui.screens.nodes import NodesScreen
from cniscope.tui.screens.probe_form import ProbeForm
from cniscope.tui.screens.probes import ProbesScreen
from cniscope.tui.screens.runs import RunsScreen
from cniscope.tui.screens.screen_frame import CniscopeScreen

Clock = Callable[[], int]


class CniscopeApp(App[None]):
    TITLE = "cniscope"
    CSS_PATH = "app.tcss"
    MODES: ClassVar[dict[str, type[Screen[None]]]] = {  # type: ignore[assignment]
        "nodes": NodesScreen, "mesh": MeshScreen, "probes": ProbesScreen, "runs": RunsScreen, "log": LogScreen,
    }
    DEFAULT_MODE = "nodes"
    COMMANDS = App.COMMANDS | {NodeCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("1", "switch_mode('nodes')", "Nodes"),
        Binding("2", "switch_mode('mesh')", "Mesh"),
        Binding("3", "switch_mode('probes')", "Probes"),
        Binding("4", "switch_mode('runs')", "Runs"),
        Binding("5", "switch_mode('log')", "Log"),
        Binding("p", "probe_form", "Probe…"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, client: ClusterClient, clock: Clock | None = None, refresh_hz: float = 2.0) -> None:
        super().__init__()
        self.client = client
        self.model = ClusterModel()
        self.last_result: common_pb2.ProbeResult | None = None
        self.probe_line = "Enter: node detail · p: probe form · r/R: RTT to the next node · /: filter · s: sort"
        self._clock: Clock = clock or time.time_ns
        self.refresh_hz = refresh_hz

    # ---- lifecycle ---------------------------------------------------------------------------
    def now_ns(self) -> int:
        return self._clock()

    def on_mount(self) -> None:
        self.watch_events()
        self.set_interval(1.0 / self.refresh_hz, self.sync_now)

    def sync_now(self) -> None:
        """Redraw the current screen from the model (the refresh tick; also called after actions)."""
        try:
            screen = self.screen
        except ScreenStackError:  # no screen left while the app shuts down
            return
        if isinstance(screen, CniscopeScreen):
            screen.sync_all()

    async def on_unmount(self) -> None:
        await self.client.close()

    @work(exclusive=True, group="watch")
    async def watch_events(self) -> None:
        async for ev in self.client.events():
            if isinstance(ev, ConnectionState):
                was = self.model.connected
                self.model.set_connection(ev.connected, ev.detail)
                if was and not ev.connected:
                    self.model.add_log(self.now_ns(), "warning", "", f"collector unreachable: {ev.detail}")
                    self.sync_now()
                continue
            self.model.apply(ev)
            if ev.WhichOneof("body") == "snapshot_done":
                self.sync_now()  # the whole snapshot is in: draw it now, not on the next tick

    # ---- probes --------------------------------------------------------------------------------
    async def run_probe(self, req: common_pb2.ProbeRequest) -> common_pb2.ProbeResult:
        """Run one probe through the collector, keeping the model up to date; raises CniscopeError."""
        if not req.probe_id:
            req.probe_id = f"tui-{uuid.uuid4().hex[:12]}"
        entry = self.model.start_probe(req, self.now_ns())
        try:
            async for upd in self.client.run_probe(req):
                if upd.WhichOneof("body") == "progress":
                    self.model.adopt_probe_id(entry, upd.progress.probe_id)  # the collector names probes
                    self.model.update_probe(entry, upd.progress.fraction, upd.progress.message)
                else:
                    self.model.finish_probe(entry, upd.result)
                    return upd.result
            raise CniscopeError("the collector ended the probe without a result")
        except CniscopeError as exc:
            self.model.finish_probe(entry, None, f"{exc.title}: {exc}")
            raise

    @work(group="probes")
    async def fire_probe(self, req: common_pb2.ProbeRequest) -> None:
        what = f"{req.kind} {req.source_node} → {req.target_node or req.target_address} ({req.path or 'host'})"
        self.probe_line = f"{what} …"
        self.sync_now()
        try:
            r = await self.run_probe(req)
        except CniscopeError as exc:
            self.notify(str(exc), title=exc.title, severity="error")
            self.probe_line = f"{what}: {exc.title}: {exc}"
        else:
            self.last_result = r
            self.probe_line = probe_result_text(r)
            if not r.ok:
                self.notify(r.error, title=f"{req.kind} probe failed", severity="warning")
        self.sync_now()

    def push_probe_form(self, source: str | None = None, target: str | None = None, kind: str = "rtt") -> None:
        nodes = sorted(self.model.nodes)
        if not nodes:
            self.notify("no nodes yet", severity="warning")
            return

        def fire(req: common_pb2.ProbeRequest | None) -> None:
            if req is not None:
                self.fire_probe(req)
                if self.current_mode != "probes":
                    self.notify(f"{req.kind} {req.source_node} → {req.target_node} fired (3: Probes)", timeout=3)

        self.push_screen(ProbeForm(nodes, kind=kind, source=source, target=target), fire)

    def action_probe_form(self) -> None:
        src = None
        if isinstance(self.screen, NodesScreen):
            src = self.screen.selected_node()
        elif isinstance(self.screen, NodeDetailScreen):
            src = self.screen.node
        self.push_probe_form(source=src)

    def open_node(self, name: str) -> None:
        if name in self.model.nodes:
            self.push_screen(NodeDetailScreen(name))

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from binding_commands(self, screen)
        yield from super().get_system_commands(screen)


def run_tui(client: ClusterClient) -> int:
    """Run the TUI on ``client``: the collector's gRPC client, or a recording replayed."""
    CniscopeApp(client).run()
    return 0
