"""The package layout promised by the design: five source roots of one namespace, light imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROOTS = ["proto", "agent", "collector", "tui", "core"]


def test_no_init_in_namespace_roots() -> None:
    stray = [str(p.relative_to(ROOT)) for r in ROOTS for p in [ROOT / r / "cniscope" / "__init__.py"] if p.exists()]
    assert stray == [], f"an __init__.py here hides every other source root: {stray}"


def test_every_root_holds_its_piece() -> None:
    for r, piece in zip(ROOTS, ["api", "agent", "collector", "tui", "core"], strict=True):
        assert (ROOT / r / "cniscope" / piece).is_dir(), f"{r}/cniscope/{piece} missing"


def _loaded(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return {m.split(".")[0] for m in out.stdout.split()}


def test_agent_import_loads_no_textual() -> None:
    mods = _loaded("import cniscope.agent.node_agent")
    assert "textual" not in mods
    assert "kubernetes" not in mods


def test_cli_help_loads_no_heavy_modules() -> None:
    mods = _loaded("import contextlib, io\nfrom cniscope.cli import build_parser\n"
                   "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
                   "    build_parser().parse_args(['--help'])")
    for heavy in ("bcc", "textual", "kubernetes"):
        assert heavy not in mods, f"`cniscope --help` imported {heavy}"


def test_console_script_help_runs() -> None:
    exe = Path(sys.executable).parent / "cniscope"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True)
    assert "lab" in out.stdout
    assert "probe" in out.stdout
