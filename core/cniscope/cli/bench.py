"""``cniscope bench``: labelled benchmark runs, comparisons (also against the published study),
CI gates and service scaling — all through the collector's Runs API."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cniscope.cli.collector_address import collector_of
from cniscope.core.errors import CniscopeError

if TYPE_CHECKING:
    from cniscope.api.v1 import runs_pb2
    from cniscope.client.grpc_collector import CollectorClient

T = TypeVar("T")

FORMATS = ("table", "json", "markdown", "html")
COMPARE_EXAMPLES = """\
examples:
  cniscope bench compare --reference report-2026-02          the published study alone (no collector needed)
  cniscope bench compare --reference report-2026-02:A,E      two of its scenarios
  cniscope bench compare "A: VPC CNI" "E: ENI + tuning"      two stored runs; deltas against the first
  cniscope bench compare A E --baseline E                    ... against E instead
  cniscope bench compare E --reference report-2026-02:E --baseline E --fail-if 'rtt.p50 > +10%'

The first line names the baseline. Stored runs live in the collector; --reference alone reads only
the published figures shipped with cniscope.
"""


def register(sub: Any) -> None:
    bench = sub.add_parser("bench", help="benchmark runs: run a suite, list, show, compare, service scaling")
    bsub = bench.add_subparsers(dest="bench_cmd", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--collector", default=None, help="collector address (default: CNISCOPE_COLLECTOR, "
                                                          "the local lab's socket, 127.0.0.1:7400)")

    p = bsub.add_parser("run", help="run the probe suite across node pairs, repeated; medians with min/max")
    common(p)
    p.add_argument("--label", required=True, help='what this run is, e.g. "E: ENI + tuning"')
    p.add_argument("--suite", default="standard", choices=("standard", "quick"))
    p.add_argument("--repeat", type=int, default=3, help="repetitions (the median is reported)")
    p.add_argument("--pairs", default="auto", help="auto | all | node1:node2,node2:node3")
    p.add_argument("--only", default="", help="comma-separated suite items, e.g. rtt,connect")
    p.add_argument("-o", "--output", default="table", choices=("table", "json"))
    p.set_defaults(func=cmd_run)

    p = bsub.add_parser("list", help="stored runs")
    common(p)
    p.add_argument("-o", "--output", default="table", choices=("table", "json"))
    p.set_defaults(func=cmd_list)

    p = bsub.add_parser("show", help="one run: fingerprint, figures (median, min, max), skipped items")
    common(p)
    p.add_argument("run", help="run id, id prefix or label")
    p.add_argument("-o", "--output", default="table", choices=FORMATS)
    p.set_defaults(func=cmd_show)

    p = bsub.add_parser("compare", help="runs side by side, deltas vs a baseline, --fail-if gates",
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=COMPARE_EXAMPLES)
    common(p)
    p.add_argument("runs", nargs="*", help="run ids, id prefixes or labels")
    p.add_argument("-o", "--output", default="table", choices=FORMATS)
    p.add_argument("--out-file", default=None, help="write the rendering to this file instead of stdout")
    p.add_argument("--baseline", default="", metavar="RUN",
                   help="the run (id, id prefix or label) every other column's delta is against; default: the "
                        "first run named (with --reference, its first published scenario), e.g. --baseline "
                        "'A: VPC CNI'")
    p.add_argument("--fail-if", action="append", default=[], metavar="EXPR",
                   help="exit 3 when crossed, e.g. 'rtt.p50 > +10%%', 'udp.loss_pct > 1' (repeatable)")
    p.add_argument("--reference", default="", help="published figures beside the runs: report-2026-02[:E]")
    p.set_defaults(func=cmd_compare)

    p = bsub.add_parser("services", help="service scaling: N Services, NAT rules and pod→Service connect setup")
    common(p)
    p.add_argument("--counts", default="4,104,1000", help="Service counts, e.g. 4,104,1000")
    p.add_argument("--backend", default="auto",
                   help="auto (the lab's iptables-nft for lab agents — ebpf on a lab up with --datapath ebpf — "
                        "else kubernetes) | kubernetes | iptables-nft | iptables-legacy | nft | ebpf (Cilium-style "
                        "socket LB), or a comma-separated list, e.g. iptables-nft,ebpf")
    p.add_argument("--lab", default=None, help="lab name (default: the lab of the collector address)")
    p.add_argument("--connects", type=int, default=200, help="connect attempts per repetition")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--label", default="")
    p.add_argument("-o", "--output", default="table", choices=FORMATS)
    p.add_argument("--out-file", default=None)
    p.set_defaults(func=cmd_services)

    for name, helptext, fn in (("delete", "delete a stored run", cmd_delete),
                               ("cancel", "stop a running run (nothing is left running)", cmd_cancel)):
        p = bsub.add_parser(name, help=helptext)
        common(p)
        p.add_argument("run")
        p.set_defaults(func=fn)


def _call(ns: argparse.Namespace, fn: Callable[[CollectorClient], Awaitable[T]]) -> T:
    """``fn`` with a client of the collector ``ns`` names, on a fresh event loop."""
    from cniscope.client.grpc_collector import CollectorClient

    async def go() -> T:
        async with CollectorClient(collector_of(ns)) as client:
            return await fn(client)

    return asyncio.run(go())


def _emit(text: str, out_file: str | None) -> None:
    if out_file:
        Path(out_file).write_text(text)
        print(f"wrote {out_file}", file=sys.stderr)
    else:
        sys.stdout.write(text)


# ---- streaming runs with a progress bar, interruptible -------------------------------------------
def _stream(ns: argparse.Namespace,
            start: Callable[[CollectorClient], AsyncIterator[runs_pb2.RunUpdate]]) -> runs_pb2.Run:
    """Follow a run's updates; the first Ctrl-C cancels the run and waits until it has stopped
    (in-flight probe finished, rules removed), a second one leaves at once."""
    show = sys.stderr.isatty()
    state: dict[str, Any] = {"run_id": "", "interrupted": 0}

    async def follow(client: CollectorClient) -> runs_pb2.Run | None:
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        cancel_task: list[asyncio.Task[Any]] = []

        def on_sigint() -> None:
            state["interrupted"] += 1
            if state["interrupted"] > 1 or not state["run_id"]:
                if main is not None:
                    main.cancel()
                return
            print("\ninterrupted: stopping the run (Ctrl-C again to leave at once)…", file=sys.stderr)
            cancel_task.append(asyncio.ensure_future(client.cancel_run(state["run_id"])))

        loop.add_signal_handler(signal.SIGINT, on_sigint)
        final = None
        try:
            async for upd in start(client):
                if upd.WhichOneof("body") == "progress":
                    pr = upd.progress
                    state["run_id"] = pr.run_id
                    if show:
                        frac = pr.done / pr.total if pr.total else 0.0
                        n = int(frac * 24)
                        print(f"\r{'█' * n}{'░' * (24 - n)} {pr.done}/{pr.total} {pr.message[:60]:<60}",
                              end="", file=sys.stderr, flush=True)
                else:
                    final = upd.run
            if cancel_task:
                final = await cancel_task[0]
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            if show:
                print("\r" + " " * 100 + "\r", end="", file=sys.stderr)
        return final

    try:
        run = _call(ns, follow)
    except asyncio.CancelledError:
        raise CniscopeError("left without waiting for the run to stop", title="interrupted") from None
    if run is None:
        raise CniscopeError("the collector ended the run without a result")
    return run


def run_text(run: Any) -> str:
    from cniscope.api.v1 import runs_pb2
    from cniscope.core import benchmetrics as bm
    from cniscope.core.render import table

    status = runs_pb2.RunStatus.Name(run.status).removeprefix("RUN_STATUS_").lower()
    out = [f"run {run.run_id}  {run.label!r}  {status}  suite={run.suite} repeat={run.repeat}  "
           f"pairs={', '.join(run.pairs)}"]
    if run.error:
        out.append(f"error: {run.error}")
    out += [f"  {k:<20} {v}" for k, v in run.fingerprint.items()]
    rows = []
    for k in sorted(run.figures, key=bm.sort_key):
        f = run.figures[k]
        rows.append([k, bm.fmt(k, f.median), bm.fmt(k, f.min), bm.fmt(k, f.max), str(f.n)])
    if rows:
        out += ["", table(["figure", "median", "min", "max", "n"], rows, "lrrrr")]
    for s in run.skipped:
        out.append(f"skipped {s.item}: {s.reason}")
    return "\n".join(out) + "\n"


def _run_json(run: Any) -> str:
    from google.protobuf import json_format

    return json.dumps(json_format.MessageToDict(run, preserving_proto_field_name=True,
                                                always_print_fields_with_no_presence=True), indent=2) + "\n"


def cmd_run(ns: argparse.Namespace) -> int:
    from cniscope.api.v1 import runs_pb2

    req = runs_pb2.StartRunRequest(label=ns.label, suite=ns.suite, repeat=ns.repeat, pairs=ns.pairs,
                                   only=[o.strip() for o in ns.only.split(",") if o.strip()])
    run = _stream(ns, lambda client: client.start_run(req))
    sys.stdout.write(_run_json(run) if ns.output == "json" else run_text(run))
    if run.status == runs_pb2.RUN_STATUS_CANCELLED:
        return 130
    return 0 if run.status == runs_pb2.RUN_STATUS_DONE else 1


def cmd_list(ns: argparse.Namespace) -> int:
    import datetime as dt

    from cniscope.api.v1 import runs_pb2
    from cniscope.core.render import table

    runs = _call(ns, lambda client: client.stored_runs())
    if ns.output == "json":
        print(json.dumps([json.loads(_run_json(r)) for r in runs], indent=2))
        return 0
    rows = []
    for r in runs:
        when = dt.datetime.fromtimestamp(r.started_unix_nano / 1e9, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        rows.append([r.run_id, r.label, r.kind, r.suite, str(r.repeat),
                     runs_pb2.RunStatus.Name(r.status).removeprefix("RUN_STATUS_").lower(), when,
                     r.fingerprint.get("environment", r.fingerprint.get("cni", ""))])
    print(table(["RUN", "LABEL", "KIND", "SUITE", "REPEAT", "STATUS", "STARTED (UTC)", "ENVIRONMENT"], rows))
    return 0


def cmd_show(ns: argparse.Namespace) -> int:
    run = _call(ns, lambda client: client.get_run(ns.run))
    if run.kind == "services" and run.detail_json and ns.output != "json":
        from cniscope.collector.reports.scaling import render_scaling

        sys.stdout.write(render_scaling(run.label, json.loads(run.detail_json), ns.output))
        return 0
    if ns.output in ("markdown", "html"):
        return cmd_compare(argparse.Namespace(**{**vars(ns), "runs": [ns.run], "baseline": "", "fail_if": [],
                                                 "reference": "", "out_file": None}))
    sys.stdout.write(_run_json(run) if ns.output == "json" else run_text(run))
    return 0


def cmd_compare(ns: argparse.Namespace) -> int:
    from cniscope.api.v1 import runs_pb2
    from cniscope.core import benchmetrics as bm

    for t in ns.fail_if:
        bm.parse_threshold(t)  # refuse a malformed gate before contacting anyone
    req = runs_pb2.CompareRequest(run_ids=ns.runs, baseline=ns.baseline, fail_if=ns.fail_if,
                                  reference=ns.reference, format=ns.output)
    if not ns.runs and not ns.reference:
        raise CniscopeError("name one or more runs, or --reference report-2026-02")
    if ns.runs:
        resp = _call(ns, lambda client: client.compare(req))
    else:  # published figures only: rendered here, no collector involved
        from cniscope.collector.runs.runs_service import build_comparison

        resp = build_comparison([], req)
    _emit(baseline_line(resp.json, ns.output, bool(ns.baseline)) + resp.rendered, ns.out_file)
    if resp.failed:
        for f in resp.failures:
            print(f"fail-if crossed: {f}", file=sys.stderr)
        return 3
    return 0


def baseline_line(comparison_json: str, fmt: str, chosen: bool) -> str:
    """The comparison's first line: which column is the baseline and why (json and html carry it inside)."""
    if fmt not in ("table", "markdown"):
        return ""
    c = json.loads(comparison_json)
    base: dict[str, Any] = next((r for r in c["runs"] if r.get("id") == c["baseline"]), {})
    if chosen:
        why = "chosen with --baseline"
    elif len(c["runs"]) == 1:
        why = "the only run"
    else:
        first = "published scenario" if ":" in c["baseline"] and "(published)" in base.get("label", "") else "run named"
        why = f"default: the first {first}; choose another with --baseline RUN"
    return f"baseline: {base.get('label') or c['baseline']} [{c['baseline']}] ({why})\n\n"


def _lab_of(address: str) -> str:
    """``unix:///run/cniscope/lab/NAME/collector.sock`` → NAME; else CNISCOPE_LAB or the default lab."""
    import os

    if address.startswith("unix:") and address.endswith("/collector.sock"):
        return Path(address.split(":", 1)[1]).parent.name
    return os.environ.get("CNISCOPE_LAB", "")


def cmd_services(ns: argparse.Namespace) -> int:
    from cniscope.api.v1 import runs_pb2

    try:
        counts = [int(c) for c in ns.counts.split(",") if c.strip()]
    except ValueError:
        raise CniscopeError(f"--counts must be integers separated by commas, got {ns.counts!r}") from None
    backends = [b.strip() for b in ns.backend.split(",") if b.strip()]
    lab = ns.lab if ns.lab is not None else _lab_of(collector_of(ns))
    req = runs_pb2.ServiceScalingRequest(label=ns.label, counts=counts, backends=backends, lab=lab,
                                         connects=ns.connects, repeat=ns.repeat)
    run = _stream(ns, lambda client: client.start_service_scaling(req))
    if ns.output == "json" and not run.detail_json:
        _emit(_run_json(run), ns.out_file)
    else:
        from cniscope.collector.reports.scaling import render_scaling

        detail = json.loads(run.detail_json) if run.detail_json else {}
        text = render_scaling(run.label, detail, ns.output)
        if run.error:
            text += f"run {run.run_id}: {run.error}\n"
        _emit(text, ns.out_file)
    if run.status == runs_pb2.RUN_STATUS_CANCELLED:
        return 130
    return 0 if run.status == runs_pb2.RUN_STATUS_DONE else 1


def cmd_delete(ns: argparse.Namespace) -> int:
    deleted = _call(ns, lambda client: client.delete_run(ns.run))
    print("deleted" if deleted else "not deleted")
    return 0


def cmd_cancel(ns: argparse.Namespace) -> int:
    run = _call(ns, lambda client: client.cancel_run(ns.run))
    sys.stdout.write(run_text(run))
    return 0
