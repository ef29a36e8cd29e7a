"""A fixed-size, log-bucketed latency histogram: bounded memory whatever the job count.

Bucket 0 holds every value up to FLOOR seconds; bucket i > 0 holds (FLOOR * G**(i-1),
FLOOR * G**i]. With G = 2**(1/8) a bucket is 9% wide, and a quantile read at the
bucket's geometric middle is within BUCKET_ERROR (4.4%) of the true value, above
FLOOR (below it, within FLOOR). Values past the last edge (~37 h) fall in the last
bucket. A histogram is a sparse {bucket: count} map, so merging two (another master's,
another minute's) is adding counts: associative and commutative, which is what lets
every master of a fleet add its jobs to one shared histogram in Redis (observe/slostore.py).

Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

FLOOR = 0.001  # seconds: everything quicker is "about a millisecond"
GROWTH = 2 ** (1 / 8)
BUCKETS = 8 * 27 + 1  # FLOOR * 2**27 s ~ 37 h: the last edge
BUCKET_ERROR = math.sqrt(GROWTH) - 1  # largest relative error of a value read back from its bucket
_LOG_GROWTH = math.log(GROWTH)

Histogram = Mapping[int, int]


def bucket_of(seconds: float) -> int:
    """The bucket a latency falls in (negative and NaN count as 0, huge ones as the last)."""
    if not seconds > FLOOR:  # also NaN
        return 0
    index = math.ceil(math.log(seconds / FLOOR) / _LOG_GROWTH - 1e-9)
    # the float log may land a value exactly on an edge one bucket off: settle it by the edge itself
    while index > 1 and seconds <= upper_edge(index - 1):
        index -= 1
    while index < BUCKETS - 1 and seconds > upper_edge(index):
        index += 1
    return min(max(index, 1), BUCKETS - 1)


def upper_edge(index: int) -> float:
    return FLOOR * GROWTH ** index


def value_of(index: int) -> float:
    """What a bucket reads back as: its geometric middle (bucket 0: FLOOR)."""
    if index <= 0:
        return FLOOR
    return FLOOR * GROWTH ** (index - 0.5)


def add(hist: dict[int, int], seconds: float, count: int = 1) -> None:
    index = bucket_of(seconds)
    hist[index] = hist.get(index, 0) + count


def merge(*hists: Histogram) -> dict[int, int]:
    out: dict[int, int] = {}
    for hist in hists:
        for index, count in hist.items():
            if count:
                out[index] = out.get(index, 0) + count
    return out


def total(hist: Histogram) -> int:
    return sum(hist.values())


def quantile(hist: Histogram, q: float) -> float | None:
    """The nearest-rank q-quantile (0 < q <= 1), read back from its bucket; None when empty."""
    n = total(hist)
    if n == 0:
        return None
    rank = max(1, math.ceil(q * n - 1e-9))
    seen = 0
    for index in sorted(hist):
        seen += hist[index]
        if seen >= rank:
            return value_of(index)
    return value_of(max(hist))


def quantiles(hist: Histogram, qs: Iterable[float]) -> dict[float, float | None]:
    return {q: quantile(hist, q) for q in qs}


def from_fields(fields: Mapping[str, int], prefix: str = "b") -> dict[int, int]:
    """A histogram out of a Redis hash's `b<index>` fields; fields out of range are ignored."""
    out: dict[int, int] = {}
    for name, count in fields.items():
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            index = int(name[len(prefix):])
            if 0 <= index < BUCKETS and count > 0:
                out[index] = out.get(index, 0) + count
    return out
