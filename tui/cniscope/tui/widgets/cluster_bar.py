"""The top bar on every screen: cluster fingerprint, collector address, connection state and the
collector's database (size, bound, time to full)."""

from __future__ import annotations

import re
from collections import Counter

from rich.text import Text
from textual.widgets import Static

from cniscope.api.v1 import cluster_pb2
from cniscope.tui import facts
from cniscope.tui.cluster_model import ClusterModel

_PROC = re.compile(r"^cni_(?:cpu_millicores|rss_bytes)\{.*process=([^,}]+)")
DB_WARN_SECONDS = 86_400     # the database's figures turn to a warning when full sooner than this
DB_WARN_SHARE = 0.9          # or when it holds more than this share of its bound


def size_text(n: int) -> str:
    """Bytes in binary units: '512 B', '9.5 KiB', '412 MiB', '1.5 GiB'."""
    value, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{n} B" if unit == "B" else f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"


def duration_text(seconds: float) -> str:
    """A coarse duration: '45 s', '12 min', '5 h', '3 d'."""
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def db_text(st: cluster_pb2.StorageStatus) -> tuple[str, bool]:
    """The database's size, bound and time to full as the bar shows them, and whether that is a
    warning (full within a day, or past 90 % of the bound). No bound: the size alone; not growing:
    no time to full."""
    text = f"db {size_text(st.db_bytes)}"
    warn = False
    if st.max_bytes:
        text += f" / {size_text(st.max_bytes)}"
        warn = st.db_bytes > DB_WARN_SHARE * st.max_bytes
    if st.HasField("time_to_full_seconds"):
        ttf = st.time_to_full_seconds
        text += " · full, pruning the oldest" if ttf <= 0 else f" · full in {duration_text(ttf)}"
        warn = warn or ttf < DB_WARN_SECONDS
    return text, warn


def node_fingerprint(model: ClusterModel, name: str) -> tuple[str, str, bool]:
    """(CNI, kube-proxy mode, whether the capability report names the CNI) of one node; without a
    name, the CNI is the processes it samples ('' when none)."""
    st = model.nodes[name]
    us = model.units(name)
    fp = facts.fingerprint(us)
    mode = fp.get("kube_proxy") or facts.kube_proxy_mode(us) or ""
    cni = " ".join(x for x in (fp.get("cni", ""), fp.get("cni_version", "")) if x)
    if cni:
        return cni, mode, True
    return ", ".join(sorted({m.group(1) for k in st.figures if (m := _PROC.match(k))})), mode, False


class Fingerprint:
    """(CNI, kube-proxy mode) as most nodes report them; a node is read again only when its
    capability report changed (or, for a node whose report names no CNI, when its samples did)."""

    def __init__(self) -> None:
        self._seen = 0
        self._nodes: dict[str, tuple[tuple[int, int] | None, str, str]] = {}

    def __call__(self, model: ClusterModel) -> tuple[str, str]:
        for name, seq in model.node_seq.items():
            if seq <= self._seen:
                continue
            caps = model.nodes[name].capabilities
            key = (caps.time_unix_nano, len(caps.units))
            hit = self._nodes.get(name)
            if hit is None or hit[0] != key:
                cni, mode, named = node_fingerprint(model, name)
                self._nodes[name] = (key if named else None, cni, mode)
        self._seen = model.seq
        cnis = Counter(cni or "?" for _key, cni, _mode in self._nodes.values())
        modes = Counter(mode for _key, _cni, mode in self._nodes.values() if mode)
        cni = cnis.most_common(1)[0][0] if cnis else "?"
        mode = modes.most_common(1)[0][0] if modes else "?"
        return cni, mode


class ClusterBar(Static):
    DEFAULT_CSS = "ClusterBar { height: 1; background: $panel; color: $text; padding: 0 1; }"
    _shown: tuple[int, str] = (-1, "")
    _text: Text | None = None

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.fingerprint = Fingerprint()

    def show(self, model: ClusterModel, address: str, title: str) -> None:
        if self._shown == (model.seq, title):
            return
        self._shown = (model.seq, title)
        up, total = model.counts()
        cni, mode = self.fingerprint(model)
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append("cniscope", style="bold")
        t.append(f" {title}", style="bold cyan")
        t.append("  CNI ", style="dim")
        t.append(cni)
        t.append("  kube-proxy ", style="dim")
        t.append(mode)
        t.append("  nodes ", style="dim")
        t.append(f"{up}/{total}")
        t.append("  collector ", style="dim")
        t.append(model.collector_address or address)
        t.append("  ")
        if model.connected:
            t.append("● connected", style="bold green")
        else:
            detail = f": {model.connection_detail}" if model.connection_detail else ""
            t.append(f"○ disconnected{detail}", style="bold red")
        if model.storage is not None:
            db, warn = db_text(model.storage)
            t.append("  ")
            t.append(db, style="bold yellow" if warn else "")
        if t != self._text:
            self._text = t
            self.update(t, layout=False)
