"""The top bar on every screen: cluster fingerprint, collector address, connection state."""

from __future__ import annotations

import re
from collections import Counter

from rich.text import Text
from textual.widgets import Static

from cniscope.tui import facts
from cniscope.tui.model import ClusterModel

_PROC = re.compile(r"^cni_(?:cpu_millicores|rss_bytes)\{.*process=([^,}]+)")


def fingerprint(model: ClusterModel) -> tuple[str, str]:
    """(CNI, kube-proxy mode) as most nodes report them."""
    cnis: Counter[str] = Counter()
    modes: Counter[str] = Counter()
    for name, st in model.nodes.items():
        us = model.units(name)
        fp = facts.fingerprint(us)
        procs = sorted({m.group(1) for k in st.figures if (m := _PROC.match(k))})
        cni = " ".join(x for x in (fp.get("cni", ""), fp.get("cni_version", "")) if x)
        cnis[cni or ", ".join(procs) or "?"] += 1
        mode = fp.get("kube_proxy") or facts.kube_proxy_mode(us)
        if mode:
            modes[mode] += 1
    cni = cnis.most_common(1)[0][0] if cnis else "?"
    mode = modes.most_common(1)[0][0] if modes else "?"
    return cni, mode


class ClusterBar(Static):
    DEFAULT_CSS = "ClusterBar { height: 1; background: $panel; color: $text; padding: 0 1; }"
    _shown: tuple[int, str] = (-1, "")

    def show(self, model: ClusterModel, address: str, title: str) -> None:
        if self._shown == (model.seq, title):
            return
        self._shown = (model.seq, title)
        up, total = model.counts()
        cni, mode = fingerprint(model)
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
        self.update(t)
