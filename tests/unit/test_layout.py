"""The package layout promised by the design: five source roots of one namespace, light imports,
no import cycles (also none hidden under TYPE_CHECKING or inside a function), module names unique
across the tree, and product modules and classes small enough to read in one sitting."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
ROOTS = ["proto", "agent", "collector", "tui", "core"]
MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 250


def test_no_init_in_namespace_roots() -> None:
    stray = [str(p.relative_to(ROOT)) for r in ROOTS for p in [ROOT / r / "cniscope" / "__init__.py"] if p.exists()]
    assert stray == [], f"an __init__.py here hides every other source root: {stray}"


def test_every_root_holds_its_piece() -> None:
    for r, piece in zip(ROOTS, ["api", "agent", "collector", "tui", "core"], strict=True):
        assert (ROOT / r / "cniscope" / piece).is_dir(), f"{r}/cniscope/{piece} missing"


def _loaded(code: str, env: dict[str, str] | None = None) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
                         capture_output=True, text=True, check=True, cwd=ROOT, env=env)
    return {m.split(".")[0] for m in out.stdout.split()}


# What an agent loads only where it is used: the Kubernetes client (an API), bcc and tarfile
# (tracers), the metrics and health endpoints (configured), dnspython (a dns probe), YAML (a
# kubeconfig); pyroute2, psutil and an HTTP client never (raw netlink, /proc, one socket); textual
# is the TUI's.
AGENT_LAZY = ("kubernetes", "bcc", "tarfile", "textual", "pyroute2", "psutil", "http", "dns", "yaml",
              "prometheus_client")


def test_agent_import_loads_nothing_it_may_not_use() -> None:
    mods = _loaded("import cniscope.agent.node_agent")
    assert [m for m in AGENT_LAZY if m in mods] == []


def test_a_lab_agent_at_work_loads_nothing_it_may_not_use() -> None:
    """An agent without a Kubernetes API, endpoints or tracers that has collected its capability
    report and sampled once (every inspection unit and sampler ran) still loads none of them."""
    code = ("import asyncio\nfrom cniscope.agent.node_agent import NodeAgent\n"
            "from cniscope.core.config import AgentConfig\n"
            "agent = NodeAgent(AgentConfig(node='n1', host_ip='198.18.0.11', token_file=''))\n"
            "asyncio.run(agent.refresh.collect_first())\n"
            "assert agent.capabilities is not None and len(agent.capabilities.units) >= 5\n"
            "assert {s.name for s in agent.samples.sample_all()} >= {'agent_cpu_millicores', 'agent_rss_bytes'}")
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")
           and not k.startswith("CNISCOPE_")}
    mods = _loaded(code, env)
    assert [m for m in AGENT_LAZY if m in mods] == []


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


# ---- import cycles ----------------------------------------------------------------------------------
def import_cycles(modules: Iterable[str], imported_by: Callable[[str], Iterable[str]]) -> list[list[str]]:
    """Groups of modules that import each other, directly or around a loop (Tarjan's strongly
    connected components, iteratively); a module importing itself counts too."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(modules):
        if start in index:
            continue
        work = [(start, iter(sorted(imported_by(start))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            nxt = next(edges, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(imported_by(nxt)))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    group.append(m)
                    if m == node:
                        break
                if len(group) > 1 or node in imported_by(node):
                    found.append(sorted(group))
    return found


def _cycles_of(package: str) -> list[list[str]]:
    graph = grimp.build_graph(package, cache_dir=None)   # TYPE_CHECKING and function-level imports included
    return sorted(import_cycles(graph.modules, graph.find_modules_directly_imported_by))


def test_no_import_cycles() -> None:
    cycles = _cycles_of("cniscope")
    assert cycles == [], "modules that import each other (break the loop with a protocol or a lower module):\n" + \
        "\n".join(" <-> ".join(c) for c in cycles)


def test_cycles_hidden_under_type_checking_or_in_a_function_are_found(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "loopy"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "app.py").write_text("from loopy import screen\n")
    (pkg / "screen.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from loopy import app\n")
    (pkg / "run.py").write_text("def go() -> None:\n    from loopy import helper\n")
    (pkg / "helper.py").write_text("import loopy.run\n")
    (pkg / "alone.py").write_text("import loopy.helper\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _cycles_of("loopy") == [["loopy.app", "loopy.screen"], ["loopy.helper", "loopy.run"]]


# ---- names and sizes --------------------------------------------------------------------------------
def _product_modules() -> list[Path]:
    return sorted(p for r in ROOTS for p in (ROOT / r / "cniscope").rglob("*.py"))


def test_module_names_are_unique_across_the_roots() -> None:
    names = Counter(p.name for p in _product_modules() if p.name not in ("__init__.py", "__main__.py"))
    twice = {n: [str(p.relative_to(ROOT)) for p in _product_modules() if p.name == n] for n, k in names.items() if k > 1}
    assert twice == {}, f"module names used more than once (name each for what it holds): {twice}"


def test_no_hand_written_module_over_400_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in _product_modules() if "_pb2" not in p.name
            and (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}, f"modules over {MAX_MODULE_LINES} lines (split them by concern): {long}"


def test_no_class_over_250_lines() -> None:
    big = {}
    for p in _product_modules():
        if "_pb2" in p.name:
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ClassDef) and (n := (node.end_lineno or node.lineno) - node.lineno + 1) > MAX_CLASS_LINES:
                big[f"{p.relative_to(ROOT)}:{node.name}"] = n
    assert big == {}, f"classes over {MAX_CLASS_LINES} lines (a class does one job): {big}"
