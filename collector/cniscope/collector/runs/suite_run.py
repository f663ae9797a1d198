"""The body of a suite run: refresh the agents' capability reports (fingerprint, census), then every
item × pair × repetition as a probe through the dispatcher, each figure stored per repetition."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from dataclasses import dataclass

from cniscope.api.v1 import common_pb2, runs_pb2
from cniscope.collector.dispatcher import Dispatcher
from cniscope.collector.runs import capwait, run_fingerprint
from cniscope.collector.runs import run_store as rstore
from cniscope.collector.runs.footprint_figures import footprint_samples
from cniscope.collector.runs.manager import ActiveRun, RunManager, run_probe
from cniscope.collector.runs.service_fronts import NO_FRONTS, Fronts, FrontsSource
from cniscope.collector.runs.suite import Item, choose_pairs, items
from cniscope.collector.state import ClusterState
from cniscope.core.errors import ValidationError

CAPS_WAIT = capwait.CAPS_WAIT  # then the run goes on with the last reports and says so in the fingerprint


@dataclass
class SuiteRun:
    state: ClusterState
    dispatcher: Dispatcher
    manager: RunManager
    fronts: FrontsSource | None = None   # the Services fronting the probe pods (service-path items)

    def prepare(self, req: runs_pb2.StartRunRequest) -> tuple[runs_pb2.Run, list[Item], list[tuple[str, str]]]:
        if not req.label.strip():
            raise ValidationError("a run needs a label (e.g. \"E: ENI + tuning\")")
        its = items(req.suite or "standard", list(req.only))
        repeat = req.repeat or 3
        if not 1 <= repeat <= 20:
            raise ValidationError(f"repeat must be 1..20, got {repeat}")
        pairs = choose_pairs(list(self.state.sessions), req.pairs)
        run = runs_pb2.Run(label=req.label.strip(), kind="suite", suite=req.suite or "standard", repeat=repeat,
                           pairs=[f"{a}→{b}" for a, b in pairs])
        return run, its, pairs

    async def start(self, req: runs_pb2.StartRunRequest) -> ActiveRun:
        run, its, pairs = self.prepare(req)

        async def body(ar: ActiveRun) -> None:
            await self._body(ar, its, pairs)

        return await self.manager.launch(run, body)

    async def refresh_capabilities(self, nodes: list[str]) -> capwait.Refresh:
        """Ask each agent for a fresh capability report; who was late, and which unit was slow where."""
        return await capwait.refresh(self.state, nodes, CAPS_WAIT)

    async def _body(self, ar: ActiveRun, its: list[Item], pairs: list[tuple[str, str]]) -> None:
        run = ar.run
        fronts = await self._fronts(ar, its)
        probe_items = [i for i in its if i.is_probe and (i.path != "service" or fronts is not None)]
        ar.progress_total = run.repeat * len(probe_items) * len(pairs) + 1
        nodes = sorted({n for p in pairs for n in p} | set(self.state.sessions))
        ar.emit("refreshing the agents' capability reports (fingerprint, census)")
        refreshed = await self.refresh_capabilities(nodes)
        run.fingerprint.update(run_fingerprint.derive({n: self.state.nodes[n] for n in nodes if n in self.state.nodes}))
        note = refreshed.note(CAPS_WAIT)
        if note:
            run.fingerprint["note"] = note
        ar.emit("fingerprint: " + ", ".join(f"{k}={v}" for k, v in run.fingerprint.items()
                                             if k in ("cni", "kube_proxy", "environment")), step=True)
        detail: dict[str, object] = {}
        failures: dict[str, list[str]] = defaultdict(list)
        windows: list[tuple[int, int]] = []
        for rep in range(run.repeat):
            t0 = time.time_ns()
            for item in probe_items:
                for a, b in pairs:
                    ar.check()
                    ar.emit(f"rep {rep + 1}/{run.repeat}: {item.name} {a}→{b if item.needs_target else '(resolver)'}")
                    res = await self._probe(ar, item, a, b, fronts)
                    ar.progress_done += 1
                    if res is None:
                        continue
                    if not res.ok:
                        failures[item.name].append(f"rep {rep + 1} {a}→{b}: {res.error}")
                        continue
                    rows = [(m, rep, f"{a}→{b}", float(res.figures[f]), res.probe_id)
                            for m, f in item.figures.items() if f in res.figures]
                    missing = [f for f in item.figures.values() if f not in res.figures]
                    if missing:
                        failures[item.name].append(f"rep {rep + 1}: result lacks {', '.join(missing)}")
                    await self.manager.db(rstore.add_values, run.run_id, rows)
            windows.append((t0, time.time_ns()))
        for item in its:
            if item.kind == "footprint":
                await self._footprint(ar, item, windows, nodes)
            elif item.kind == "census":
                await self._census(ar, item, nodes)
        vals = await self.manager.db(rstore.values, run.run_id)
        assert isinstance(vals, dict)
        for item in probe_items:
            if not any(m in vals for m in item.figures) and failures[item.name]:
                ar.skip(item.name, f"every attempt failed, e.g. {failures[item.name][0]}")
        detail["failures"] = dict(failures)
        detail["windows"] = windows
        run.detail_json = json.dumps(detail)

    async def _fronts(self, ar: ActiveRun, its: list[Item]) -> Fronts | None:
        """The Services fronting the probe pods when service-path items are asked for; without them
        those items are skipped. What the datapath holds goes into the fingerprint."""
        wanted = [i for i in its if i.is_probe and i.path == "service"]
        if not wanted:
            return None
        fronts = await asyncio.to_thread(self.fronts) if self.fronts is not None else None
        if fronts is None:
            for i in wanted:
                ar.skip(i.name, NO_FRONTS)
            return None
        ar.run.fingerprint["service_path"] = fronts.describe()
        return fronts

    async def _probe(self, ar: ActiveRun, item: Item, a: str, b: str,
                     fronts: Fronts | None = None) -> common_pb2.ProbeResult | None:
        params = item.params.to_wire() if item.params is not None else {}
        req = common_pb2.ProbeRequest(kind=item.kind, source_node=a, path=item.path, params=params)
        if item.needs_target:
            req.target_node = b
        if item.path == "service":
            req.target_address = fronts.addresses.get(b, "") if fronts is not None else ""
            if not req.target_address:
                return common_pb2.ProbeResult(ok=False, kind=item.kind, error=f"no Service fronts {b}'s probe pod")
        return await run_probe(self.dispatcher, ar, req)

    async def _footprint(self, ar: ActiveRun, item: Item, windows: list[tuple[int, int]], nodes: list[str]) -> None:
        rows = []
        for rep, (t0, t1) in enumerate(windows):
            got = await self.manager.db(footprint_samples, nodes, t0, t1)
            assert isinstance(got, dict)
            for metric, sample in item.figures.items():
                v = got.get(sample)
                if v is not None:
                    rows.append((metric, rep, "nodes", v / 2**20 if sample.endswith("_bytes") else v, ""))
        if rows:
            await self.manager.db(rstore.add_values, ar.run.run_id, rows)
        else:
            ar.skip(item.name, "unavailable: no CNI agent process was sampled on any node during the run "
                               "(no cni_cpu_millicores / cni_rss_bytes samples)")

    async def _census(self, ar: ActiveRun, item: Item, nodes: list[str]) -> None:
        counts = []
        for n in nodes:
            st = self.state.nodes.get(n)
            if st is not None:
                rules, _ = run_fingerprint.census_nat_rules(st.capabilities)
                if rules is not None:
                    counts.append(rules)
        if not counts:
            ar.skip(item.name, "unavailable: no iptables/nft census in the agents' capability reports")
            return
        ar.run.fingerprint["nat_rules_per_node"] = ", ".join(f"{c:.0f}" for c in counts)
        await self.manager.db(rstore.add_values, ar.run.run_id, [("nat.rules", 0, "nodes", max(counts), "")])

