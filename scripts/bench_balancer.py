#!/usr/bin/env python3
"""Replay a bursty load through the balancer, with and without its hysteresis rules.

    .venv/bin/python scripts/bench_balancer.py [--seed 7] [--minutes 10] [--strategy time]

A deterministic simulation, no Redis and no processes: two queues get a steady trickle of jobs
plus bursts (bulk enqueues) at random times; workers take jobs FIFO and run them for a known
runtime (+-50%); every balance_cooldown seconds the balancer decides and the simulated daemon
applies the targets (new workers boot in 0.5 s; stopping removes idle workers at once, a busy
worker told to stop finishes its job first and counts as live until then).

All runs replay the same arrivals. "naive" keeps the balancer's desired counts but moves every
pool straight toward them: down even while its workers are busy, no yield, no dead band.
"hysteresis" is balance() as the daemon calls it without Options.cooldown; "+cooldown" passes
cooldown=3 s (no new worker for a backlog the pool clears before the next step). It reports:
  - scaling steps: steps where the daemon had to start or stop a worker in some pool;
  - reversals: a pool's actions changing direction (start after stop, or stop after start);
  - backlog: pending jobs over both queues, sampled every 0.1 s;
  - reaction: from a burst's arrival until its pool's target reaches the count desired at the
    first step after it (steps and simulated seconds), and until it is within one worker of it;
    "drained first": the backlog was gone before the target got there;
  - process starts and the peak of live processes (stopping ones included).
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from horizond.core.balancer import Decision, Options, PoolStats, balance  # noqa: E402

DT = 0.1
BOOT = 0.5
QUEUES = {"a": 0.4, "b": 2.0}  # mean runtime (s)
TRICKLE = {"a": 1.0, "b": 0.15}  # jobs per second between bursts
BURST = {"a": (100, 800), "b": (20, 150)}  # jobs per burst


@dataclass
class Worker:
    ready_at: float
    job_left: float = 0.0  # > 0: running a job
    ran: float = 0.0  # how long the current job has run (the daemon passes it as running_for)
    stopping: bool = False


@dataclass
class Run:
    scaling_steps: int = 0
    reversals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(QUEUES, 0))
    backlog: list[int] = field(default_factory=list)
    reaction_steps: list[int] = field(default_factory=list)
    reaction_secs: list[float] = field(default_factory=list)
    near_secs: list[float] = field(default_factory=list)
    drained_first: int = 0
    starts: int = 0
    peak_live: int = 0


def load(seed: int, seconds: float) -> tuple[list[tuple[float, str, float]], list[tuple[float, str]]]:
    """Every job (arrival time, queue, runtime) and the bursts (time, queue), from one seed."""
    rng = random.Random(seed)
    jobs, bursts = [], []
    for q, rate in TRICKLE.items():
        t = rng.expovariate(rate)
        while t < seconds:
            jobs.append((t, q, QUEUES[q] * rng.uniform(0.5, 1.5)))
            t += rng.expovariate(rate)
    t = rng.uniform(10, 40)
    while t < seconds - 30:
        q = rng.choice(list(QUEUES))
        bursts.append((round(t, 1), q))
        jobs += [(round(t, 1), q, QUEUES[q] * rng.uniform(0.5, 1.5)) for _ in range(rng.randint(*BURST[q]))]
        t += rng.expovariate(1 / 60)
    return sorted(jobs), bursts


def naive(pools: dict[str, PoolStats], o: Options) -> Decision:
    """The balancer's desired counts, reached by always moving toward them (no hysteresis, no yield)."""
    d = balance(pools, o)
    targets = {k: max(p.current - o.max_shift, d.desired[k]) if d.desired[k] < p.current else p.current
               for k, p in pools.items()}
    room = o.max_processes - sum(targets.values())
    for k, p in pools.items():
        if d.desired[k] > p.current and o.memory_ok:
            up = max(0, min(d.desired[k] - p.current, o.max_shift, room))
            targets[k] += up
            room -= up
    return Decision(targets, d.reasons, d.desired)


def simulate(o: Options, cooldown: float, seconds: float, seed: int, decide) -> Run:
    jobs, bursts = load(seed, seconds)
    run = Run()
    queue = {q: deque() for q in QUEUES}
    workers: dict[str, list[Worker]] = {q: [] for q in QUEUES}
    done: dict[str, deque] = {q: deque(maxlen=50) for q in QUEUES}  # recent runtimes -> moving mean
    last_move = dict.fromkeys(QUEUES, 0)
    open_bursts: list[dict] = []  # backlogs being watched for the reaction metric
    next_job = next_burst = 0
    ticks_per_step = round(cooldown / DT)
    for tick in range(round(seconds / DT)):
        now = tick * DT
        while next_job < len(jobs) and jobs[next_job][0] <= now + 1e-9:
            queue[jobs[next_job][1]].append(jobs[next_job][2])
            next_job += 1
        while next_burst < len(bursts) and bursts[next_burst][0] <= now + 1e-9:
            open_bursts.append({"t": now, "q": bursts[next_burst][1], "steps": 0, "want": 0, "near": None})
            next_burst += 1
        if tick % ticks_per_step == 0:
            pools = {q: PoolStats(len(queue[q]), sum(done[q]) / len(done[q]) if done[q] else None,
                                  sum(w.job_left > 0 for w in workers[q]), len(workers[q]),
                                  tuple(w.ran for w in workers[q] if w.job_left > 0)) for q in QUEUES}
            decision = decide(pools, o)
            changed = False
            for q, target in decision.targets.items():
                move = apply(workers[q], target, now, run)
                if move:
                    changed = True
                    if last_move[q] and (move > 0) != (last_move[q] > 0):
                        run.reversals[q] += 1
                    last_move[q] = move
            run.scaling_steps += changed
            watch(open_bursts, decision, queue, now, run)
        for q, ws in workers.items():
            for w in ws:
                if w.job_left > 0:
                    w.job_left -= DT
                    w.ran += DT
                if w.job_left <= 0 and not w.stopping and w.ready_at <= now and queue[q]:
                    w.job_left, w.ran = queue[q].popleft(), 0.0  # an RQ worker takes the next job at once
                    done[q].append(w.job_left)  # the daemon's moving mean of measured runtimes
            workers[q] = [w for w in ws if not (w.stopping and w.job_left <= 0)]
        run.backlog.append(sum(len(v) for v in queue.values()))
        run.peak_live = max(run.peak_live, sum(len(ws) for ws in workers.values()))
    return run


def apply(ws: list[Worker], target: int, now: float, run: Run) -> int:
    """Start workers up to the target, or stop the surplus: idle ones first, then busy ones.

    Returns what was done: +started or -newly told to stop (0: nothing, e.g. the stopping ones
    are still finishing their jobs and already account for the surplus).
    """
    live = len(ws)
    if target > live:
        ws += [Worker(ready_at=now + BOOT) for _ in range(target - live)]
        run.starts += target - live
        return target - live
    surplus = live - target - sum(w.stopping for w in ws)
    stopped = 0
    for w in sorted((w for w in ws if not w.stopping), key=lambda w: w.job_left > 0):
        if stopped >= surplus:
            break
        w.stopping = True
        stopped += 1
    ws[:] = [w for w in ws if not (w.stopping and w.job_left <= 0)]
    return -stopped


def watch(open_bursts: list[dict], decision: Decision, queue: dict, now: float, run: Run) -> None:
    """Reaction: the first step whose target reaches what the first step after the burst desired."""
    for b in list(open_bursts):
        q = b["q"]
        b["steps"] += 1
        if b["steps"] == 1:
            b["want"] = decision.desired[q]
        if b["near"] is None and decision.targets[q] >= b["want"] - 1:
            b["near"] = now - b["t"]
        if decision.targets[q] >= b["want"]:
            run.reaction_steps.append(b["steps"])
            run.reaction_secs.append(now - b["t"])
        elif queue[q]:
            continue
        else:
            run.drained_first += 1
        if b["near"] is not None:
            run.near_secs.append(b["near"])
        open_bursts.remove(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--strategy", choices=("time", "size"), default="time")
    args = parser.parse_args()
    o = Options("auto", args.strategy, min_processes=1, max_processes=8, max_shift=2)
    cooldown = 3.0
    seconds = args.minutes * 60
    print(f"$ .venv/bin/python scripts/bench_balancer.py --seed {args.seed} --minutes {args.minutes:g} "
          f"--strategy {args.strategy}")
    jobs, bursts = load(args.seed, seconds)
    print(f"auto/{args.strategy}, min 1, max 8, shift 2, cooldown {cooldown:g} s; queues "
          + ", ".join(f"{q} ({r:g} s/job, trickle {TRICKLE[q]:g}/s)" for q, r in QUEUES.items())
          + f"; {len(jobs)} jobs, {len(bursts)} bursts over {seconds:g} s\n")
    with_cooldown = Options(**{**o.__dict__, "cooldown": cooldown})
    runs = {"naive": simulate(o, cooldown, seconds, args.seed, naive),
            "hysteresis": simulate(o, cooldown, seconds, args.seed, balance),
            "+cooldown": simulate(with_cooldown, cooldown, seconds, args.seed, balance)}
    rows = [
        ("scaling steps", lambda r: f"{r.scaling_steps} of {round(seconds / cooldown)}"),
        ("reversals a / b", lambda r: " / ".join(str(v) for v in r.reversals.values())),
        ("backlog mean / max (jobs)", lambda r: f"{sum(r.backlog) / len(r.backlog):.1f} / {max(r.backlog)}"),
        ("reaction steps mean / max", lambda r: _mean_max(r.reaction_steps, "{:.1f} / {:d}")),
        ("reaction seconds mean / max", lambda r: _mean_max(r.reaction_secs, "{:.1f} / {:.1f}")),
        ("  ... to desired - 1: seconds", lambda r: _mean_max(r.near_secs, "{:.1f} / {:.1f}")),
        ("bursts reached / drained first", lambda r: f"{len(r.reaction_steps)} / {r.drained_first}"),
        ("process starts", lambda r: str(r.starts)),
        ("peak live processes", lambda r: str(r.peak_live)),
    ]
    print(f"{'':32}" + "".join(f"{name:>16}" for name in runs))
    for label, cell in rows:
        print(f"{label:32}" + "".join(f"{cell(r):>16}" for r in runs.values()))


def _mean_max(values: list, fmt: str) -> str:
    return fmt.format(sum(values) / len(values), max(values)) if values else "-"


if __name__ == "__main__":
    main()
