"""A/B of two distribute source trees on the same machine, runs interleaved: what a change buys.

    BENCH_SOURCE=/path/after python -m benchmarks.compare /path/before --label NAME [--metrics ...]

Metrics: ``batch`` and ``single`` (durable results/s, as in `benchmarks.throughput`), ``idle``
(server CPU share with `--idle` idle connections), ``latency`` (p99 dispatch latency with
`--active` one-slot workers at about one task per second each), ``browsers`` (server CPU per
browser-like worker-hour, as in `benchmarks.server_cost`), ``gen-array`` and ``gen-function``
(seconds until `--datasets` datasets are stored, as in `benchmarks.generation`). Each run of each metric starts a
fresh server; A and B alternate, so load from elsewhere on the machine hits both alike. Writes the
section ``ab-NAME`` of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from . import common
from .common import fmt, median, preamble, table, write_section

__all__ = ["main"]


def _metrics(args: argparse.Namespace) -> dict[str, tuple[str, Callable[[], float], bool]]:
    from .connections import active_latency
    from .generation import generate
    from .server_cost import browser_cost, idle_cost
    from .throughput import measure

    return {
        "batch": (
            "batched frames, 16 workers: results/s",
            lambda: measure("batch", 16, args.seconds, 1).runs[0].rate,
            True,
        ),
        "single": (
            "one task per frame, 64 workers: results/s",
            lambda: measure("single", 64, args.seconds, 1).runs[0].rate,
            True,
        ),
        "idle": (
            f"{args.idle} idle connections: server CPU (% of a core)",
            lambda: 100 * idle_cost(args.idle, 10.0),
            False,
        ),
        "latency": (
            f"{args.active} active workers: p99 dispatch latency (ms)",
            lambda: active_latency(args.active, 1.0, 8.0, 1, 4)[0]["p99"],
            False,
        ),
        "browsers": (
            f"{args.browsers} browser-like workers (~1 task/s each): server CPU s per worker-hour",
            lambda: browser_cost(args.browsers, 20.0)[0] * 3600 / args.browsers,
            False,
        ),
        "gen-array": (
            f"{args.datasets:,} datasets from an array: seconds until stored",
            lambda: generate("array", args.datasets, 100_000_000)[0],
            False,
        ),
        "gen-function": (
            f"{args.datasets:,} datasets from a generator function (low water {args.low_water:,}): seconds until stored",
            lambda: generate("function", args.datasets, args.low_water)[0],
            False,
        ),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.split("\n")[0])
    parser.add_argument("before", help="the other source tree (A); this one (B) is BENCH_SOURCE or the checkout")
    parser.add_argument("--label", required=True)
    parser.add_argument("--metrics", default="batch,single")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--active", type=int, default=1000)
    parser.add_argument("--browsers", type=int, default=100)
    parser.add_argument("--datasets", type=int, default=1_000_000)
    parser.add_argument("--low-water", type=int, default=100_000_000, help="generator_low_water for gen-function")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    metrics = _metrics(args)
    wanted = [m for m in args.metrics.split(",") if m]
    sources = {"before": Path(args.before).resolve(), "after": common.SOURCE}
    values: dict[tuple[str, str], list[float]] = {}
    head = preamble("benchmarks.compare", argv)  # the load average at the start, as it says
    for k in range(args.runs):
        for metric in wanted:
            for name, source in sources.items():
                common.SOURCE = source
                value = metrics[metric][1]()
                values.setdefault((name, metric), []).append(value)
                print(f"[{k + 1}/{args.runs}] {metric} {name}: {value:,.2f}", flush=True)
    common.SOURCE = sources["after"]
    lines = [f"### A/B: {args.label}\n", head, "\n"]
    lines.append(
        f"before = `{sources['before']}`, after = `{sources['after']}`; {args.runs} interleaved runs, medians.\n\n"
    )
    rows = []
    for metric in wanted:
        label, _, higher_better = metrics[metric]
        a, b = median(values[("before", metric)]), median(values[("after", metric)])
        digits = 0 if higher_better else 1
        runs = " / ".join(fmt(v, digits) for v in values[("after", metric)])
        rows.append((label, fmt(a, digits), f"**{fmt(b, digits)}**", f"{b / a:.2f}x" if a else "n/a", runs))
    lines.append(table(("metric", "before", "after", "after / before", "after, runs"), rows))
    text = "".join(lines)
    print(text)
    if not args.no_write:
        write_section(f"ab-{args.label}", text)


if __name__ == "__main__":
    main()
