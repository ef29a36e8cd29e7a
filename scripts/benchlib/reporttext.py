"""The text of docs/benchmarks.md around report.py's tables: method, machine, command, date."""

from __future__ import annotations

import json
from pathlib import Path

import report

CONTENDERS_TOP = {"rq-pool-simple": "`rq worker-pool`'s pool process", "celery": "Celery's main process"}


def document(data: dict) -> str:
    meta, m = data["meta"], data["meta"]["machine"]
    parts = [_header(meta, m), _targets(data), _paths(data)]
    if "trace" in data:
        parts.append(_trace(data))
        if "keys" in data["trace"].get("horizond noop", {}):
            parts.append(_success_keys(data))
    parts.append(_throughput(data))
    if "realistic" in data:
        parts.append(_realistic(data))
    parts.append(_master(data))
    if "spawn" in data:
        parts.append(_spawn(data["spawn"]))
    if "memory" in data:
        parts.append(_memory(data["memory"]))
    if "soak" in data:
        parts.append(_soak(data["soak"]))
    web = Path(__file__).resolve().parent.parent.parent / "docs" / "bench_web.json"
    if web.exists():
        parts.append(_web(json.loads(web.read_text())))
    slo = web.parent / "bench_slo.json"
    if slo.exists():  # scripts/bench_slo.py's own runs
        import sloreport
        parts.append(sloreport.section(json.loads(slo.read_text())))
    return "\n\n".join(parts) + "\n"


def _web(web: dict) -> str:
    """The dashboard's pages, from scripts/bench_web.py's own run (docs/bench_web.json)."""
    rows = ["| page | path | median ms | max ms |", "|---|---|---:|---:|"]
    rows += [f"| {name} | `{p['path']}` | {p['median_ms']:.1f} | {p['max_ms']:.1f} |"
             for name, p in web["pages"].items()]
    worst = max(web["pages"].items(), key=lambda kv: kv[1]["max_ms"])
    levels = (f"\nOne `[slo.\"queue-*\"]` level covers {web['slo_queues']} of them, each with an hour of "
              "service-level slices\n(the Service levels page, the Overview and /api/snapshot show them).\n"
              if web.get("slo_queues") else " ")
    return f"""## Dashboard pages (issue 17: every page under 300 ms)

Generated from docs/bench_web.json, the raw output of `python scripts/bench_web.py` (run on
{web['when']}, {web['cpus']} cores, load {web['load_at_start']:.2f} at its start; not part of the
run above). Workload: {web['failed_jobs']:,} failed and {web['finished_jobs']:,} finished jobs in
{web['queues']} queues ({web['redis_keys']:,} Redis keys).{levels}Each page fetched {web['rounds']} times
by an admin over HTTP from the `horizond web` process. Slowest single fetch: {worst[0]},
{worst[1]['max_ms']:.1f} ms.

""" + "\n".join(rows)


def _small(meta: dict) -> list[str]:
    """What makes this run smaller than the defaults, if anything."""
    args, defaults = meta["args"], meta["defaults"]
    keys = ("jobs", "rounds", "real_seconds", "real_backlog", "profile_jobs")
    return [f"--{k.replace('_', '-')} {args[k]} (default {defaults[k]})" for k in keys
            if args.get(k) is not None and args[k] < defaults[k]]


def _header(meta: dict, m: dict) -> str:
    small = _small(meta)
    load = " / ".join(f"{x:.2f}" for x in meta["load_average_start"])
    load_end = " / ".join(f"{x:.2f}" for x in meta.get("load_average_end", ()))
    warning = ""
    if small:
        warning = ("\n\n**A small run** (" + ", ".join(small) + "): figures for development only; the lead "
                   "reruns `scripts/bench --markdown` on a quiet machine for the published ones.")
    if meta["load_average_start"][0] >= 1.0:
        warning += (f"\n\n**Run on a busy machine** (1-minute load average {meta['load_average_start'][0]:.2f} "
                    "when it began): other work shared the 2 cores, so throughput and CPU figures are noisier "
                    "than on a quiet machine.")
    return f"""# Benchmarks

Generated on {meta['date']} ({meta['duration_s'] / 60:.1f} minutes) by

```
{meta['command']}
```

Every figure below comes from that run, whose raw results are docs/benchmarks.json beside this file.
Do not edit: rerun the command (`python scripts/benchlib/report.py --write docs/benchmarks.json`
rebuilds this text and README's figures from the JSON alone).{warning}

Machine: {m['cores']} cores ({m['cpu']}, {m['arch']}), {m['memory_gb']} GB; Python {m['python']},
Redis {m['redis']}, rq {m['rq']}, redis-py {m['redis_py']}, Celery {m['celery'] or 'not installed'}.
Load average (1/5/15 min) when the run began: {load}; when it ended: {load_end} (the bench's own
processes count in that one); a machine running other work makes every figure noisier.

Method: contenders run side by side in one run against a private `redis-server` the bench starts on
a free loopback port (no persistence), on the same pre-enqueued jobs, with the same number of worker
processes, in alternating order (even rounds run the contenders in reverse); figures are medians over
rounds. A run is timed from launching the contender's command until the last job is done (startup
counts), and counts everything the contender sends to Redis from launch to drained: workers, master,
scheduler, pool process. The bench's own polling is subtracted."""


def _targets(data: dict) -> str:
    return "## Targets (issue 14, \"Lean on every path\")\n\n" + report.targets_table(data)


def _paths(data: dict) -> str:
    return f"""## Redis commands and round trips per job, by path

{report.paths_table(data)}

Commands: the `INFO commandstats` total over the run (after `CONFIG RESETSTAT`) minus the bench's own
polls, divided by the jobs; a command inside `MULTI` or inside a Lua script counts once, as do
`MULTI`, `EXEC` and `EVALSHA` themselves. Round trips: the growth of `INFO stats`
`total_writes_processed` (Redis flushes one reply write per client request it served: a single
command, a pipeline, a `MULTI`/`EXEC` block and a script call are one each; a blocking `BLMOVE` is one
when it is served) minus the bench's polls, divided by the jobs. Both include the contender's
startup and its idle work (heartbeats, the scheduler's polling) during the run, spread over the jobs.
Paths: success is a no-op job with a 500 s result TTL (RQ's default), drained when the finished
registry holds every job; `result_ttl=0` is drained when no job is left queued, in the intermediate
list or in the started registry; failure raises (no retry) and is drained when the failed registry
holds every job; retry raises with `Retry(max=1, interval=600)` and is drained when the scheduled
registry holds every job (the failing attempt and its scheduled retry; the retry itself would be a
success). `scripts/benchlib/jobtrace.py` lists, via MONITOR, the commands of a few jobs."""


def _trace(data: dict) -> str:
    return f"""### Request by request (MONITOR)

One worker process of each contender, warmed up on 3 jobs, then MONITOR on while the next jobs of the
path ran (`scripts/benchlib/jobtrace.py`, which prints the same). A request is what a client sends and waits
for: a single command, a `MULTI`/`EXEC` block or a script call, its commands listed (the count includes
`MULTI`/`EXEC` and `EVALSHA`); a pipeline without `MULTI` shows as its single commands. Fractions are
work done less often than once per job (the scheduler, idle heartbeats, a new connection).

{report.trace_tables(data)}"""


def _success_keys(data: dict) -> str:
    t = data["trace"]["horizond noop"]
    scripts = sum(r["per_job"] for r in t["requests"] if r["request"].startswith("EVALSHA"))
    inner = sum(r["per_job"] for r in t["keys"])
    return f"""### Why the success path stays above 24 commands: what each command writes, and who reads it

The same traced jobs as above, the lean worker's script commands by key (ids replaced by their kind):
{inner:.1f} commands a job inside {scripts:.1f} script calls (each `EVALSHA` counts one more).

{report.keys_table(data)}

Every command is one of RQ's own writes for the job (built by RQ's helpers, see
horizond/worker/leanbatch.py), or a guard that RQ makes with a separate read or `WATCH`
(the suspension, the job still started, no dependents). Leaving any out changes what an RQ tool
reads. The one saving left that keeps RQ's end state is merging a job's end with the next job's
start: one `EVALSHA` and one round trip. The lean worker does not do that, because the start's
writes are built by RQ's helpers from the next job's hash, and that hash only arrives with the
end script's reply. The target of 24 is therefore not met on this path; the `result_ttl=0`,
failure and retry paths meet theirs."""


def _throughput(data: dict) -> str:
    out = ["## Throughput, no-op jobs, 2 processes", report.throughput_table(data, "noop"),
           "Celery: prefork, Redis broker and Redis result backend, results kept 500 s like RQ's (the same "
           "per-task work: run the function, store its result with a TTL). The bench counts Celery's finished "
           "tasks by its result writes (`SETEX` calls in `INFO commandstats`), so no task sends an extra "
           "command for the count."]
    if any(r["path"] == "io5" for r in data["paths"]):
        out += ["5 ms jobs:", report.throughput_table(data, "io5")]
    return "\n\n".join(out)


def _realistic(data: dict) -> str:
    return f"""## Realistic workload

The demo's workload (horizond/demo.py) on etc/horizond.toml's supervisors, horizond vs one
`rq worker-pool -w rq.worker.SimpleWorker` per supervisor with the same queues and process counts
(fixed: horizond with `balance = "off"` and min = max, so both run the same number of workers all the
time). The full counts (the supervisors' `max_processes`) are too many for this machine, so they are
scaled down proportionally. Jobs wait on I/O for 20-200 ms (uniform), 2% fail their first attempt and
succeed on their retry (`Retry(max=2, interval=1)`: the scheduler re-queues them after 1 s), a quarter
have `result_ttl=0`, spread over the demo's queues with its weights. The same seeded sequence of jobs
for every contender.

{report.realistic_section(data['realistic'])}

Wait: enqueue to the job's first attempt starting, as the job itself notes it (in a file of its
worker process, not in Redis) during the paced phase (Poisson arrivals). Backlog jobs/s: the backlog
enqueued at once, timed until no job is queued, running or scheduled for a retry. Total PSS: the
contender's processes and all their descendants (master or pool processes, workers, scheduler),
sampled at the end of the paced phase. A horizond worker serving several queues in order (here the
`default` supervisor: `default`, then `cache`) blocks on its first queue and looks at the others between
blocks: {_blocks(data['realistic'])} (`MULTI_QUEUE_BLOCK` in horizond/dequeue.py: a move from one of
several queues without RQ's job-losing BLPOP); RQ's worker wakes on any of its queues with BLPOP. The
wait by queue shows what that costs the lower queue."""


def _blocks(real: dict) -> str:
    first, most = real.get("multi_queue_first_block_s"), real["multi_queue_block_s"]
    if first is None:
        return f"every {most:g} s while idle"
    return f"{first:g} s after a job, doubling with each empty look up to every {most:g} s"


def _master(data: dict) -> str:
    cpu = report.median_of(data["paths"], "horizond", "noop", "master_drain_cpu_pct")
    text = "## Master CPU while 2 workers drain no-op jobs\n\n"
    if cpu is not None:
        rounds = ", ".join(f"{r['master_drain_cpu_pct']:.1f}%" for r in data["paths"]
                           if r["name"] == "horizond" and r["path"] == "noop" and "master_drain_cpu_pct" in r)
        text += (f"{cpu:.1f}% of one core (median; each round: {rounds}): the master process's own user + "
                 "system CPU time (`/proc/PID/stat` via psutil, children excluded) from the first job done to "
                 "the last, over that wall time, in the no-op success runs above.")
        peers = [(CONTENDERS_TOP[n], report.median_of(data["paths"], n, "noop", "master_drain_cpu_pct"))
                 for n in CONTENDERS_TOP]
        peers = [f"{label}: {v:.1f}%" for label, v in peers if v is not None]
        if peers:
            text += " The top process of the others over their drain, measured alike: " + "; ".join(peers) + "."
    prof = data.get("master_profile")
    if prof:
        per_job = prof["ticks"] / prof["jobs"]
        why = (": the count follows the jobs, not the clock, as the master's loop makes a pass for the messages "
               "its workers send about each job") if per_job > 0.5 else (
            ": its duties run when due and workers' reports are read in batches (supervise/duties.py)")
        text += (f"\n\nWhere the master's time goes: the master under cProfile (`scripts/benchlib/masterprof.py`, "
                 f"forked children not profiled) while its 2 workers drained {prof['jobs']} no-op jobs in "
                 f"{prof['seconds']:.1f} s (launch to drained); the master's loop made {prof['ticks']} passes over its "
                 f"duties for those {prof['jobs']} jobs ({per_job:.2f} per job){why}. By own time, then by cumulative "
                 f"time:\n\n```\n{prof['summary']}\n```")
    return text


def _spawn(spawn: dict) -> str:
    lines = ["## Spawn time", "", "| what | seconds |", "|---|---:|"]
    lines += [f"| {k.replace('_', ' ')} | {v:.3f} |" for k, v in spawn.items()]
    lines += ["", "Until the workers are registered in Redis: horizond scaling a running master from 1 to N "
              "(`horizonctl scale`), and each contender from launch."]
    return "\n".join(lines)


def _memory(memory: dict) -> str:
    lines = ["## Per-worker memory, with and without `[app] preload`", "",
             "4 horizond workers each ran jobs of `benchheavy` (a stand-in for a large app: stdlib packages and "
             "~40 MB of tables built at import, each job ending with `gc.collect()`); mean per worker from "
             "`/proc/PID/smaps` via psutil, in MB:", "",
             "| | USS | PSS | RSS | master PSS | total PSS |", "|---|---:|---:|---:|---:|---:|"]
    for tag, v in memory.items():
        lines.append(f"| {tag.replace('_', ' ')} | {v['worker_uss_mb']:.1f} | {v['worker_pss_mb']:.1f} | "
                     f"{v['worker_rss_mb']:.1f} | {v['master_pss_mb']:.1f} | {v['total_pss_mb']:.1f} |")
    return "\n".join(lines)


def _soak(soak: dict) -> str:
    return (f"## Idle soak\n\nAn idle horizond with 2 workers for {soak['seconds']:.0f} s: master CPU "
            f"{soak['master_cpu_pct']:.3f}% of one core; RSS {soak['rss_start_mb']:.2f} MB at the start, "
            f"{soak['rss_end_mb']:.2f} MB at the end, {soak['rss_max_mb']:.2f} MB max over {soak['samples']} samples.")
