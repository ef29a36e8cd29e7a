"""The horizond master under cProfile, its forked children not profiled (scripts/bench's profile).

    python masterprof.py OUT.prof --config FILE [horizond options]

Runs horizond's own entry point in this process with a profiler that each forked child
switches off at once (os.register_at_fork), so only the master's time is recorded; the
stats are written to OUT.prof when the master returns (SIGTERM ends it as usual).
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import sys


def main(out: str, argv: list[str]) -> int:
    from horizond.cli import main as horizond_main

    profiler = cProfile.Profile()
    os.register_at_fork(after_in_child=profiler.disable)
    profiler.enable()
    try:
        return horizond_main(argv)
    finally:
        profiler.disable()
        profiler.dump_stats(out)


def summary(path: str, top: int = 15) -> str:
    """The functions with the most own time, then the most cumulative time, as pstats prints them."""
    out = io.StringIO()
    stats = pstats.Stats(path, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))) + "/"
    stdlib = os.path.dirname(os.__file__) + "/"
    lines = [line.rstrip().replace(root, "").replace(stdlib, "") for line in out.getvalue().splitlines()]
    keep = [line for line in lines if line.strip() and path not in line and "function calls" not in line
            and not line.strip().startswith("List reduced")]
    calls = next(line.strip() for line in lines if "function calls" in line)
    return calls + "\n" + "\n".join(keep)


def calls(path: str, function: str, filename: str = "master.py") -> int:
    """How often the master ran `function` of `filename` (e.g. its tick) during the profile."""
    return sum(primitive for (file, _, name), (primitive, *_rest) in pstats.Stats(path).stats.items()
               if name == function and file.endswith(filename))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
