"""A recorded bursty day for the seed's queues (scripts/bench_slo.py trace): what arrives when.

Generated once from a seed and committed (docs/slo_trace.csv.gz: time, queue, runtime of every
job, sorted by time), so every benchmark replays exactly that file. The shapes are the seed's:
- a daytime curve (quiet at night, a broad peak in the afternoon) for every queue, with the
  volume changing from one 5-minute block to the next (a lognormal factor);
- webhook storms: a partner replays its backlog of call-ended or payment webhooks at once,
  hundreds to thousands of jobs within seconds to a minute, at random times of the day;
- the nightly email batch: the summary emails, enqueued by cron at 02:00 within two minutes;
- MCP fan-out: an agent calling many tools at once (tens of jobs in a second), in the daytime;
- cache warming, hourly, on "cache" (served by the default supervisor when "default" is empty).
Runtimes are lognormal around each queue's mean (HTTP calls short, emails and calendar syncs
longer), so a few jobs run many times the mean.
"""

from __future__ import annotations

import gzip
import io
import math
import random
from pathlib import Path

DAY = 86_400
# queue -> (mean runtime s, lognormal sigma, jobs/s at the day's peak, jobs/s at night)
PROFILE = {
    "webhooks-high": (0.25, 0.6, 1.5, 0.1),
    "webhooks": (0.4, 0.6, 3.0, 0.3),
    "mcp-high": (1.5, 0.8, 1.0, 0.05),
    "appointments": (2.0, 0.5, 1.0, 0.05),
    "emails": (1.2, 0.5, 0.2, 0.01),
    "default": (0.6, 0.7, 1.5, 0.1),
    "cache": (3.0, 0.4, 0.0, 0.0),
}
# queue -> (storms a day, jobs per storm low/high, seconds it arrives over low/high)
STORMS = {"webhooks-high": (6, 200, 2000, 2, 20), "webhooks": (8, 300, 3000, 5, 60)}
EMAIL_BATCH = (2 * 3600, 1200, 2400, 120)  # at 02:00: jobs low/high, over seconds
FANOUTS = ("mcp-high", 30, 20, 80)  # queue, fan-outs a day (daytime), jobs low/high, each within 1 s
CACHE_WARM = ("cache", 60, 120, 10)  # every hour on the hour: jobs low/high, over seconds
BLOCK = 300  # seconds the volume factor holds
BLOCK_SIGMA = 0.3


def daytime(t: float) -> float:
    """0 at night, 1 at the afternoon peak: sin^2 between 06:00 and 23:00."""
    hour = (t % DAY) / 3600
    return math.sin(math.pi * (hour - 6) / 17) ** 2 if 6 <= hour <= 23 else 0.0


def generate(seed: int, seconds: int = DAY) -> list[tuple[float, str, float]]:
    """Every job (arrival time s, queue, runtime s) of `seconds` of the day, from one seed."""
    rng = random.Random(seed)
    jobs: list[tuple[float, str, float]] = []

    def add(t: float, queue: str) -> None:
        mean, sigma = PROFILE[queue][:2]
        runtime = rng.lognormvariate(math.log(mean) - sigma * sigma / 2, sigma)
        jobs.append((round(t, 3), queue, round(max(0.001, runtime), 3)))

    for queue, (_, _, peak, night) in PROFILE.items():
        factor = 1.0
        for second in range(seconds):
            if second % BLOCK == 0:
                factor = rng.lognormvariate(-BLOCK_SIGMA ** 2 / 2, BLOCK_SIGMA)
            rate = (night + (peak - night) * daytime(second)) * factor
            for _ in range(_poisson(rng, rate)):
                add(second + rng.random(), queue)
    for queue, (count, low, high, over_low, over_high) in STORMS.items():
        for _ in range(count):
            start, size, over = rng.uniform(0, seconds), rng.randint(low, high), rng.uniform(over_low, over_high)
            for _ in range(size):
                add(start + rng.uniform(0, over), queue)
    at, low, high, over = EMAIL_BATCH
    if at < seconds:
        for _ in range(rng.randint(low, high)):
            add(at + rng.uniform(0, over), "emails")
    queue, count, low, high = FANOUTS
    for _ in range(count):
        start = rng.uniform(9 * 3600, 20 * 3600)
        if start < seconds:
            for _ in range(rng.randint(low, high)):
                add(start + rng.random(), queue)
    queue, low, high, over = CACHE_WARM
    for hour in range(0, seconds, 3600):
        for _ in range(rng.randint(low, high)):
            add(hour + rng.uniform(0, over), queue)
    return sorted(j for j in jobs if j[0] < seconds)


def _poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method: fine for the few jobs a second a queue gets."""
    if mean <= 0:
        return 0
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def write(jobs: list[tuple[float, str, float]], path: Path) -> None:
    """CSV (time,queue,runtime), gzip with no timestamp: the same jobs give the same bytes."""
    text = io.StringIO()
    text.write("time,queue,runtime\n")
    for t, queue, runtime in jobs:
        text.write(f"{t:.3f},{queue},{runtime:.3f}\n")
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
        gz.write(text.getvalue().encode())


def read(path: Path, start: float = 0.0, end: float = math.inf) -> list[tuple[float, str, float]]:
    """The jobs arriving in [start, end), times as recorded."""
    out = []
    with gzip.open(path, "rt") as f:
        header = f.readline().strip()
        if header != "time,queue,runtime":
            raise ValueError(f"{path}: expected the header 'time,queue,runtime', got {header!r}")
        for line in f:
            t, queue, runtime = line.rstrip("\n").split(",")
            t = float(t)
            if start <= t < end:
                out.append((t, queue, float(runtime)))
    return out
