"""docs/benchmarks.md from one run's JSON (scripts/bench --markdown): every figure is read from the run.

Pure functions of the JSON that main.py writes beside the markdown (docs/benchmarks.json), so
the document can be regenerated from that file alone:
    python scripts/benchlib/report.py --write docs/benchmarks.json   # the doc and README's headline
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

PATH_NAMES = {"noop": "success (no-op, result_ttl 500 s)", "ttl0": "success, `result_ttl=0`",
              "fail": "failure into the failed registry", "retry": "failure, retry with back-off (scheduled)",
              "io5": "success, 5 ms sleep"}
CONTENDER_NAMES = {"horizond": "horizond (lean worker)", "horizond-stock": "horizond, stock `SimpleWorker`",
                   "rq-pool-simple": "`rq worker-pool -n 2 -w rq.worker.SimpleWorker`",
                   "rq-pool-fork": "`rq worker-pool -n 2` (fork per job)", "celery": "Celery prefork `-c 2`"}
# (what, path or peer, limit, at most?) from issue 14's "Lean on every path".
TARGETS = [("commands", "noop", 24, True), ("commands", "ttl0", 24, True), ("commands", "fail", 30, True),
           ("commands", "retry", 30, True), ("round_trips", "noop", 3, True),
           ("speedup", "rq-pool-simple", 2.5, False), ("speedup", "celery", 1.5, False),
           ("master_cpu", "noop", 5, True)]
TRACE_NAMES = {"horizond": "horizond (lean worker), 1 process",
               "rq-pool-simple": "`rq worker-pool -n 1 -w rq.worker.SimpleWorker`"}
REALISTIC_NAMES = {"horizond": "horizond (lean worker)",
                   "rq-pool-simple": "`rq worker-pool -w rq.worker.SimpleWorker`, one per supervisor"}
MARK_BEGIN, MARK_END = "<!-- bench:headline -->", "<!-- /bench:headline -->"


def median_of(rows: list[dict], name: str, path: str, key: str) -> float | None:
    values = [r[key] for r in rows if r["name"] == name and r["path"] == path and key in r]
    return statistics.median(values) if values else None


def measured(data: dict, what: str, arg: str) -> float | None:
    rows = data["paths"]
    if what == "commands":
        return median_of(rows, "horizond", arg, "commands_per_job")
    if what == "round_trips":
        return median_of(rows, "horizond", arg, "round_trips_per_job")
    if what == "master_cpu":
        return median_of(rows, "horizond", arg, "master_drain_cpu_pct")
    ours, theirs = median_of(rows, "horizond", "noop", "jobs_per_s"), median_of(rows, arg, "noop", "jobs_per_s")
    return ours / theirs if ours and theirs else None


def target_rows(data: dict) -> list[tuple[str, str, str, str]]:
    """(target, limit, measured, verdict) for each target the run measured."""
    labels = {"commands": "Redis commands per job, {}", "round_trips": "round trips per job, {}",
              "speedup": "no-op throughput vs {}", "master_cpu": "master CPU while 2 workers drain no-op jobs"}
    units = {"commands": "", "round_trips": "", "speedup": "x", "master_cpu": "% of a core"}
    out = []
    for what, arg, limit, at_most in TARGETS:
        value = measured(data, what, arg)
        if value is None:
            continue
        label = labels[what].format(PATH_NAMES.get(arg) or CONTENDER_NAMES.get(arg, arg))
        ok = value <= limit if at_most else value >= limit
        gap = value - limit if at_most else limit - value
        verdict = "met" if ok else f"gap: {gap:.2f}{units[what]} {'over' if at_most else 'short'}"
        out.append((label, f"{'<=' if at_most else '>='} {limit:g}{units[what]}",
                    f"{value:.2f}{units[what]}", verdict))
    return out


def targets_table(data: dict) -> str:
    lines = ["| target | limit | measured (median) | |", "|---|---:|---:|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in target_rows(data)]
    return "\n".join(lines)


def paths_table(data: dict) -> str:
    rows = data["paths"]
    names = [n for n in CONTENDER_NAMES if n != "celery" and any(r["name"] == n for r in rows)]
    head = "| path | " + " | ".join(f"{CONTENDER_NAMES[n]}: commands / round trips" for n in names) + " |"
    lines = [head, "|---|" + "---:|" * len(names)]
    for path in dict.fromkeys(r["path"] for r in rows):
        cells = []
        for n in names:
            c, t = median_of(rows, n, path, "commands_per_job"), median_of(rows, n, path, "round_trips_per_job")
            cells.append("-" if c is None else f"{c:.1f} / {t:.2f}")
        lines.append(f"| {PATH_NAMES[path]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def trace_tables(data: dict) -> str:
    """The MONITOR listing of each path: what one job costs, request by request."""
    out = []
    for key, t in data["trace"].items():
        name, path = key.split(" ")
        total_c = sum(r["commands"] * r["per_job"] for r in t["requests"])
        total_r = sum(r["per_job"] for r in t["requests"])
        out += [f"{TRACE_NAMES[name]}, {PATH_NAMES[path]} ({t['jobs']} jobs traced: {total_c:.1f} commands in "
                f"{total_r:.1f} requests per job):", "", "| per job | commands | request |", "|---:|---:|---|"]
        out += [f"| {r['per_job']:.2f} | {r['commands']} | {r['request']} |" for r in t["requests"]]
        out.append("")
    return "\n".join(out).rstrip()


def keys_table(data: dict) -> str:
    """The success path's script commands by key, with the RQ reader that needs each."""
    rows = ["| command | key | per job | read by |", "|---|---|---:|---|"]
    rows += [f"| {r['command']} | `{r['key']}` | {r['per_job']:.2f} | {r['reader']} |"
             for r in data["trace"]["horizond noop"]["keys"]]
    return "\n".join(rows)


def throughput_table(data: dict, path: str) -> str:
    rows = [r for r in data["paths"] if r["path"] == path]
    base = median_of(rows, "rq-pool-simple", path, "jobs_per_s")
    lines = ["| contender | jobs per run | jobs/s (median) | each round | vs rq-pool-simple | commands/job |",
             "|---|---:|---:|---|---:|---:|"]
    for name in CONTENDER_NAMES:
        mine = [r for r in rows if r["name"] == name]
        if not mine:
            continue
        rate = median_of(rows, name, path, "jobs_per_s")
        rounds = " / ".join(f"{r['jobs_per_s']:.0f}" for r in sorted(mine, key=lambda r: r["round"]))
        ratio = f"{rate / base:.2f}x" if base else "-"
        lines.append(f"| {CONTENDER_NAMES[name]} | {mine[0]['jobs']} | {rate:.0f} | {rounds} | {ratio} | "
                     f"{median_of(rows, name, path, 'commands_per_job'):.1f} |")
    return "\n".join(lines)


def realistic_section(real: dict) -> str:
    sups = real["supervisors"]
    counts = ", ".join(f"{n} {s['processes']} (of {s['full']})" for n, s in sups.items())
    rows = real["rows"]
    r0 = rows[0]
    lines = [f"Workers per supervisor, `max_processes` x {real['scale']:g}: {counts}; "
             f"{r0['workers']} in all. Paced phase: {r0['rate']:g} jobs/s for {r0['paced_seconds']:g} s; "
             f"backlog phase: {r0['backlog_jobs']} jobs enqueued at once.", "",
             "| contender | round | backlog jobs/s | wait p50 (ms) | wait p99 (ms) | wait max (ms) | total PSS (MB) "
             "| failed for good |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["name"], r["round"])):
        lines.append(f"| {REALISTIC_NAMES[r['name']]} | {r['round']} | {r['jobs_per_s']:.1f} | "
                     f"{r['wait_p50_ms']:.1f} | {r['wait_p99_ms']:.1f} | {r['wait_max_ms']:.1f} | "
                     f"{r['total_pss_mb']:.1f} | {r['failed_for_good']} |")
    queues = list(rows[0]["waits_by_queue"])
    lines += ["", "Wait by queue, p50 / p99 ms (jobs noted), first round:", "",
              "| contender | " + " | ".join(queues) + " |", "|---|" + "---:|" * len(queues)]
    for r in rows:
        if r["round"] == 1:
            w = r["waits_by_queue"]
            lines.append(f"| {REALISTIC_NAMES[r['name']]} | " + " | ".join(
                "-" if not w[q]["jobs"] else f"{w[q]['p50_ms']:.1f} / {w[q]['p99_ms']:.1f} ({w[q]['jobs']})"
                for q in queues) + " |")
    return "\n".join(lines)


def headline(data: dict) -> str:
    """The README's one-line figure, generated with the document (between the bench markers)."""
    rows = data["paths"]
    ratio = measured(data, "speedup", "rq-pool-simple")
    parts = []
    if ratio:
        parts.append(f"{ratio:.2f}x the no-op throughput of `rq worker-pool` (SimpleWorker, 2 processes)")
    real = data.get("realistic", {}).get("rows", [])
    ours = statistics.median(r["jobs_per_s"] for r in real if r["name"] == "horizond") if real else None
    theirs = statistics.median(r["jobs_per_s"] for r in real if r["name"] == "rq-pool-simple") if real else None
    if ours and theirs:
        parts.append(f"{ours / theirs:.2f}x on the realistic workload (20-200 ms I/O jobs)")
    cmds = median_of(rows, "horizond", "noop", "commands_per_job")
    if cmds is not None:
        parts.append(f"{cmds:.0f} Redis commands per no-op job")
    return MARK_BEGIN + "; ".join(parts) + f" (docs/benchmarks.md, {data['meta']['date']})" + MARK_END


def replace_headline(text: str, line: str) -> str:
    start, end = text.index(MARK_BEGIN), text.index(MARK_END) + len(MARK_END)
    return text[:start] + line + text[end:]


def markdown(data: dict) -> str:
    from reporttext import document
    return document(data)


def write(data: dict, root: Path) -> None:
    """docs/benchmarks.md, docs/benchmarks.json and README.md's headline, all from `data`."""
    (root / "docs" / "benchmarks.json").write_text(json.dumps(data, indent=1) + "\n")
    (root / "docs" / "benchmarks.md").write_text(markdown(data))
    readme = root / "README.md"
    readme.write_text(replace_headline(readme.read_text(), headline(data)))


if __name__ == "__main__":  # report.py RUN.json: print the document; report.py --write RUN.json: write all three
    if sys.argv[1] == "--write":
        write(json.loads(Path(sys.argv[2]).read_text()), Path(__file__).resolve().parent.parent.parent)
    else:
        print(markdown(json.loads(Path(sys.argv[1]).read_text())), end="")
