"""Small text renderings: fill bars and progress bars as Rich Text."""

from __future__ import annotations

from rich.text import Text


def fill_bar(fraction: float | None, width: int = 12) -> Text:
    if fraction is None:
        return Text("?".center(width), style="dim")
    f = max(0.0, min(1.0, fraction))
    full = int(round(f * width))
    style = "green" if f < 0.5 else "yellow" if f < 0.8 else "red"
    t = Text("█" * full, style=style)
    t.append("░" * (width - full), style="dim")
    t.append(f" {f * 100:5.1f}%")
    return t


def progress_bar(fraction: float, width: int = 10) -> str:
    f = max(0.0, min(1.0, fraction))
    full = int(f * width)
    return "█" * full + "░" * (width - full)
