#!/usr/bin/env python3
"""Balancing to the promise (issue 19): "time", "size" and "latency" on a recorded bursty day.

    .venv/bin/python scripts/bench_slo.py trace [--seed 19]        # (re)write docs/slo_trace.csv.gz
    .venv/bin/python scripts/bench_slo.py sim [--write]             # replay it through balance()
    .venv/bin/python scripts/bench_slo.py real --minutes 5 --strategy time [--start 40680] [--layout seed] [--write]
    .venv/bin/python scripts/bench_slo.py markdown                  # docs/benchmarks.md from the JSON

`trace` generates the day from a seed (scripts/benchlib/slotrace.py says what it holds) and
writes it compressed; it is committed, and everything else replays that file. `sim` replays it
once per strategy through the real balancer (scripts/benchlib/slosim.py), with the supervisors
and [slo] tables of etc/horizond.toml, and prints per queue the late jobs, the minutes the SLO
window's objective was broken and the latency percentiles, and per strategy the process-
seconds, scaling steps and reversals. `real` runs the real daemon on a slice of the same trace
(scripts/benchlib/sloreal.py). --write keeps the figures in docs/bench_slo.json and regenerates
docs/benchmarks.md, whose section on it is built from that JSON alone (as `markdown` does).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "benchlib"))

import slosim  # noqa: E402
import slostats  # noqa: E402
import slotrace  # noqa: E402

from horizond.core import arrivals, config, latency, slo  # noqa: E402

TRACE = ROOT / "docs" / "slo_trace.csv.gz"
DATA = ROOT / "docs" / "bench_slo.json"
CONFIG = ROOT / "etc" / "horizond.toml"
SEED = 19
STRATEGIES = ("time", "size", "latency")
YARDSTICKS = slosim.REFERENCES  # ("greedy", "max"): not strategies, what bounds them (slosim.reference)


def load_config(path: Path = CONFIG) -> config.Config:
    return config.parse(path.read_bytes(), str(path))


def simulate(jobs: list, cfg: config.Config, seconds: float, strategies=STRATEGIES,
             max_shift: int | None = None) -> dict:
    """Every strategy over the same jobs: figures per queue, per supervisor and in total."""
    sups = [dataclasses.replace(s, balance_max_shift=max_shift) if max_shift else s for s in cfg.supervisors]
    minutes = int(seconds // 60)
    out = {}
    for strategy in strategies:
        queues, supervisors = {}, {}
        for sup in sups:
            o = slosim.replay(sup, jobs, strategy, cfg.slos, seconds)
            supervisors[sup.name] = {"process_seconds": round(o.process_seconds, 1), "scaling_steps": o.scaling_steps,
                                     "steps": o.steps, "reversals": o.reversals, "starts": o.starts,
                                     "peak_processes": o.peak}
            for q in sup.queues:
                queues[q] = slostats.queue_figures(o.latencies[q], o.finished[q], slo.slo_for(cfg.slos, q), minutes)
        with_slo = [f for f in queues.values() if f["max_latency"] is not None]
        total = {"late": sum(f["late"] for f in with_slo), "jobs_with_slo": sum(f["jobs"] for f in with_slo),
                 "minutes_violated": sum(f["minutes_violated"] for f in with_slo),
                 **{k: round(sum(s[k] for s in supervisors.values()), 1)
                    for k in ("process_seconds", "scaling_steps", "reversals", "starts")}}
        out[strategy] = {"total": total, "queues": queues, "supervisors": supervisors}
    return out


def setup(cfg: config.Config, max_shift: int | None = None) -> dict:
    """The supervisors and service levels replayed, as the JSON states them beside the figures."""
    return {
        "supervisors": {s.name: {"queues": list(s.queues), "balance": s.balance, "min_processes": s.min_processes,
                                 "max_processes": s.max_processes,
                                 "balance_max_shift": max_shift or s.balance_max_shift,
                                 "balance_cooldown": s.balance_cooldown} for s in cfg.supervisors},
        "slo": {t.pattern: {"max_latency": t.max_latency, "success_rate": t.success_rate, "window": t.window}
                for t in cfg.slos},
        "model": {"boot_seconds": slosim.BOOT, "runtime_weight": slosim.RUNTIME_WEIGHT,
                  "arrival_half_life_seconds": arrivals.HALF_LIFE, "latency_headroom": latency.HEADROOM,
                  "long_job_runtimes": latency.LONG, "drain_seconds": slosim.DRAIN},
    }


def trace_meta(jobs: list, path: Path) -> dict:
    per = {}
    for _, q, runtime in jobs:
        n, total = per.get(q, (0, 0.0))
        per[q] = (n + 1, total + runtime)
    return {"file": str(path.relative_to(ROOT)), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "jobs": len(jobs), "seed": SEED,
            "queues": {q: {"jobs": n, "mean_runtime": round(t / n, 3)} for q, (n, t) in sorted(per.items())}}


def simulated_slice(real: dict, cfg: config.Config) -> dict:
    """The simulation of the real run's slice and strategy (from empty queues and floors, as the
    daemon starts): the figures the real run confirms or not."""
    start, seconds = real["start"], real["seconds"]
    jobs = [(t - start, q, r) for t, q, r in slotrace.read(TRACE, start, start + seconds)]
    run = simulate(jobs, cfg, seconds, strategies=(real["strategy"],))[real["strategy"]]
    return {"late": run["total"]["late"], "jobs_with_slo": run["total"]["jobs_with_slo"],
            "process_seconds": run["total"]["process_seconds"],
            "queues": {q: {k: f.get(k) for k in ("jobs", "late", "p99")} for q, f in run["queues"].items()}}


def publish(data: dict) -> None:
    """docs/bench_slo.json, then docs/benchmarks.md regenerated from the JSON files it is built from."""
    for real in data.get("real", {}).values():
        real["simulated"] = simulated_slice(real, load_config())
    for name, runs in data.get("real_layouts", {}).items():
        for real in runs.values():
            real["simulated"] = simulated_slice(real, layout(name))
    DATA.write_text(json.dumps(data, indent=1) + "\n")
    import report
    doc = ROOT / "docs" / "benchmarks.md"
    doc.write_text(report.markdown(json.loads((ROOT / "docs" / "benchmarks.json").read_text())))
    print(f"wrote {DATA.relative_to(ROOT)} and {doc.relative_to(ROOT)}")


def stored() -> dict:
    return json.loads(DATA.read_text()) if DATA.exists() else {}


def cmd_trace(args) -> int:
    jobs = slotrace.generate(args.seed)
    slotrace.write(jobs, args.out)
    print(f"wrote {args.out}: {len(jobs)} jobs from seed {args.seed}")
    return 0


def cmd_sim(args) -> int:
    cfg = load_config(args.config)
    started = time.monotonic()
    jobs = slotrace.read(args.trace, 0, args.hours * 3600)
    sim = simulate(jobs, cfg, args.hours * 3600, strategies=STRATEGIES + YARDSTICKS, max_shift=args.max_shift)
    import sloreport
    print(sloreport.sim_table(sim))
    if args.write:
        if args.hours * 3600 < slotrace.DAY or args.max_shift or args.config != CONFIG or args.trace != TRACE:
            print("--write keeps only the full day of the committed trace with etc/horizond.toml", file=sys.stderr)
            return 2
        data = stored()
        data.update({"simulation": {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                    "command": "scripts/bench_slo.py sim --write", "seconds": args.hours * 3600,
                                    "duration_s": round(time.monotonic() - started, 1),
                                    "trace": trace_meta(jobs, args.trace), **setup(cfg), "strategies": sim}})
        publish(data)
    return 0


def cmd_real(args) -> int:
    import sloreal
    result = sloreal.run(args, layout(args.layout), TRACE)
    import sloreport
    print(sloreport.real_table({args.strategy: result}))
    if args.write:
        data = stored()
        if args.layout == "seed":
            data.setdefault("real", {})[args.strategy] = result
        else:
            data.setdefault("real_layouts", {}).setdefault(args.layout, {})[args.strategy] = result
        publish(data)
    return 0


SHARED = ROOT / "docs" / "bench_slo_shared.toml"
LAYOUTS = ("seed", "shared", "shared-20", "paired")


def layout(name: str) -> config.Config:
    """The supervisors a check replays:
    - "seed": etc/horizond.toml, a supervisor per queue (the default one over default and cache);
    - "shared": every queue under one auto-balanced supervisor, 1-60 processes, shift 5
      (docs/bench_slo_shared.toml), Horizon's usual setup, where pools compete for one cap;
    - "shared-20": the same with max_processes = 20, so the cap binds whenever a storm comes;
    - "paired": the seed's, but both webhook queues (one breaker in the seed already) under one
      supervisor with the room of the two: a floor of 5 per queue, 50 processes in all."""
    if name == "seed":
        return load_config(CONFIG)
    if name in ("shared", "shared-20"):
        cfg = load_config(SHARED)
        if name == "shared":
            return cfg
        return dataclasses.replace(cfg, supervisors=tuple(dataclasses.replace(s, max_processes=20)
                                                          for s in cfg.supervisors))
    if name == "paired":
        cfg = load_config(CONFIG)
        sups = {s.name: s for s in cfg.supervisors}
        both = dataclasses.replace(sups["webhooks"], queues=("webhooks-high", "webhooks"), min_processes=5,
                                   max_processes=50)
        return dataclasses.replace(cfg, supervisors=tuple(
            both if s.name == "webhooks" else s for s in cfg.supervisors if s.name != "webhooks-high"))
    raise ValueError(f"unknown layout {name!r}: one of {', '.join(LAYOUTS)}")


def check_cell(cell: tuple[int, str]) -> dict:
    """One day x layout: time, latency and the yardsticks ("max" only where every supervisor has
    one pool: with several, each pool at the cap would break it)."""
    seed, name = cell
    jobs = slotrace.read(TRACE) if seed == SEED else slotrace.generate(seed)
    cfg = layout(name)
    single = all(s.balance == "off" or len(s.queues) == 1 for s in cfg.supervisors)
    runs = ("time", "latency", "greedy") + (("max",) if single else ())
    run = simulate(jobs, cfg, slotrace.DAY, strategies=runs)
    return {"seed": seed, "layout": name, "jobs": len(jobs),
            **{s: {k: run[s]["total"][k] for k in ("late", "jobs_with_slo", "minutes_violated", "process_seconds")}
               for s in run}}


def cmd_check(args) -> int:
    """The same comparison on other days (traces from other seeds, generated, not committed: the
    seed regenerates them exactly) and on other layouts (layout()), so the published day and the
    seed's layout are not the only evidence, and a day nothing was tuned on is among them. Both
    cores: the cells are independent."""
    from concurrent.futures import ProcessPoolExecutor
    started = time.monotonic()
    cells = [(seed, name) for seed in args.seeds for name in args.layouts]
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = []
        for row in pool.map(check_cell, cells):
            rows.append(row)
            print({k: row[k] for k in ("seed", "layout")}, {s: row[s]["late"] for s in row if isinstance(row[s], dict)})
    if args.write:
        data = stored()
        data["check"] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                         "command": f"scripts/bench_slo.py check --seeds {' '.join(map(str, args.seeds))}"
                                    + ("" if tuple(args.layouts) == LAYOUTS else f" --layouts {' '.join(args.layouts)}")
                                    + " --write",
                         "duration_s": round(time.monotonic() - started, 1), "processes": args.jobs, "rows": rows}
        publish(data)
    return 0


def cmd_markdown(args) -> int:
    publish(stored())
    return 0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("trace", help="generate the day from a seed and write it")
    t.add_argument("--seed", type=int, default=SEED)
    t.add_argument("--out", type=Path, default=TRACE)
    s = sub.add_parser("sim", help="replay the trace through balance(), once per strategy")
    s.add_argument("--hours", type=float, default=24)
    s.add_argument("--trace", type=Path, default=TRACE)
    s.add_argument("--config", type=Path, default=CONFIG)
    s.add_argument("--max-shift", type=int, help="override every supervisor's balance_max_shift (what-if)")
    s.add_argument("--write", action="store_true", help="keep the figures in docs/bench_slo.json and the doc")
    r = sub.add_parser("real", help="run the real daemon on a slice of the trace")
    r.add_argument("--minutes", type=float, default=5)
    r.add_argument("--strategy", choices=STRATEGIES, default="time")
    r.add_argument("--start", type=float, default=None, help="trace second to start at (default: the storm slice)")
    r.add_argument("--layout", choices=LAYOUTS, default="seed", help="the supervisors to run (see `check`)")
    r.add_argument("--write", action="store_true")
    c = sub.add_parser("check", help="time vs latency (and the yardsticks) on other days and layouts")
    c.add_argument("--seeds", type=int, nargs="+", default=[SEED, 20, 21])
    c.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    c.add_argument("--jobs", type=int, default=2, help="processes to run the cells in")
    c.add_argument("--write", action="store_true")
    sub.add_parser("markdown", help="regenerate docs/benchmarks.md from docs/bench_slo.json")
    args = ap.parse_args(argv)
    return {"trace": cmd_trace, "sim": cmd_sim, "real": cmd_real, "check": cmd_check,
            "markdown": cmd_markdown}[args.command](args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
