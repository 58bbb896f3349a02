"""Run every benchmark in turn (``python -m benchmarks``, ``make bench``); each rewrites its section.

``python -m benchmarks throughput floor`` runs only those. `benchmarks.compare` (A/B of two source
trees) is not part of the set: it needs a second tree to compare with.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from . import (
    browser_overhead,
    client,
    connections,
    floor,
    generation,
    scale_out,
    server_cost,
    soak,
    streams,
    throughput,
)

BENCHMARKS: dict[str, Callable[[list[str] | None], None]] = {
    "throughput": throughput.main,
    "floor": floor.main,
    "connections": connections.main,
    "generation": generation.main,
    "client": client.main,
    "server_cost": server_cost.main,
    "browser_overhead": browser_overhead.main,
    "scale_out": scale_out.main,
    "streams": streams.main,
    "soak": soak.main,  # 10 minutes
}


def main() -> None:
    wanted = sys.argv[1:] or list(BENCHMARKS)
    unknown = [name for name in wanted if name not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    for name in wanted:
        started = time.monotonic()
        print(f"=== {name}", flush=True)
        try:
            BENCHMARKS[name]([])
        except SystemExit as exc:  # a benchmark whose prerequisites are missing says so and is skipped
            if exc.code not in (None, 0):
                print(f"=== {name} skipped: {exc.code}", flush=True)
                continue
        print(f"=== {name} took {time.monotonic() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
