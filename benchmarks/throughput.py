"""Throughput: durable results per second through one server process on SQLite.

Protocol clients in other processes (`benchmarks.loadclient`) answer every task instantly, so the
server is the only thing being measured (together with the clients' share of the CPU, on the same
machine). Two modes:

- **batched**: each connection holds 256 slots and answers every `tasks` frame with one `results`
  frame (the way a fast client should talk to the server);
- **one per frame**: each connection holds one slot and answers with one `result` frame; the next
  task arrives only after that round trip.

"Durable" means counted from the database at the end (rows of the `result` table written by that
run, told apart by the client's `host`), over the wall time from the first task a client received
to the last group commit (the rows' `created`). Each point is the median of `--runs` runs of
`--seconds` seconds; the concurrency sweep is plotted to docs/benchmarks-throughput.png.

    python -m benchmarks.throughput [--seconds 4] [--runs 3] [--workers 1,4,16,64,256]
    python -m benchmarks.throughput --compare /path/to/other/checkout   # A/B of the server code
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .common import (
    ROOT,
    TRIVIAL_KERNEL,
    Server,
    array_generator,
    fmt,
    median,
    preamble,
    table,
    write_section,
)
from .loadclient import LoadGroup, LoadParams

__all__ = ["Point", "main", "measure"]

PLOT = ROOT / "docs" / "benchmarks-throughput.png"
MODES = {"batch": ("batched frames, 256 slots", 256), "single": ("one task per frame, 1 slot", 1)}
TARGETS = {"batch": 20_000, "single": 5_000}
RATE_GUESS = {"batch": 30_000, "single": 6_000}  # sizes each campaign so that no run runs dry


@dataclass
class Run:
    rate: float  # durable results / s
    results: int
    wall: float
    cpu: float  # server CPU seconds over the run
    ran_dry: bool


@dataclass
class Point:
    mode: str
    workers: int
    runs: list[Run]

    @property
    def rate(self) -> float:
        return median(r.rate for r in self.runs)

    @property
    def cpu_per_1000(self) -> float:
        return median(r.cpu / max(r.results, 1) * 1000 for r in self.runs)


def one_run(server: Server, campaign: int, mode: str, workers: int, seconds: float, tag: str) -> Run:
    slots = MODES[mode][1]
    processes = 1 if workers == 1 else 2
    params = LoadParams(server.ws_url, campaign, mode, slots=slots, tag=tag)
    with LoadGroup(params, processes) as group:
        group.connect(workers)
        cpu0 = server.cpu_seconds()
        group.go()
        time.sleep(seconds)
        stats = group.stop()
    time.sleep(0.3)  # the last group commit (flush_interval is 20 ms)
    cpu = server.cpu_seconds() - cpu0
    count, last = server.query("SELECT COUNT(*), MAX(created) FROM result WHERE host = ?", (tag,))[0]
    wall = (last - stats.first_task) if count else float("nan")
    return Run(rate=count / wall if count else 0.0, results=count, wall=wall, cpu=cpu, ran_dry=stats.byes > 0)


def measure(mode: str, workers: int, seconds: float, runs: int, *, settings: dict | None = None) -> Point:
    """`runs` runs at one concurrency, on a fresh server and campaign sized for all of them."""
    datasets = int(RATE_GUESS[mode] * (seconds + 1) * (runs + 1))
    with Server({"generator_low_water": 100_000_000, **(settings or {})}) as server:
        campaign = server.create_campaign(
            TRIVIAL_KERNEL, array_generator(datasets), name="throughput", task_timeout=3600
        )
        server.wait_status(campaign["id"], ["running"], timeout=600)
        point = Point(mode, workers, [])
        one_run(server, campaign["id"], mode, workers, 1.0, f"{mode}-{workers}-warmup")  # not counted
        for k in range(runs):
            run = one_run(server, campaign["id"], mode, workers, seconds, f"{mode}-{workers}-{k}")
            point.runs.append(run)
            print(
                f"  {mode:6} workers={workers:<4} run {k + 1}: {fmt(run.rate)} results/s ({run.results} in {run.wall:.2f} s, server CPU {run.cpu:.2f} s){' RAN DRY' if run.ran_dry else ''}",
                flush=True,
            )
    return point


def plot(points: list[Point], path: Path = PLOT) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for mode, (label, _) in MODES.items():
        series = sorted((p for p in points if p.mode == mode), key=lambda p: p.workers)
        if not series:
            continue
        xs = [p.workers for p in series]
        ys = [p.rate for p in series]
        lows = [y - min(r.rate for r in p.runs) for p, y in zip(series, ys, strict=True)]
        highs = [max(r.rate for r in p.runs) - y for p, y in zip(series, ys, strict=True)]
        ax.errorbar(xs, ys, yerr=[lows, highs], marker="o", capsize=3, label=label)
        ax.axhline(TARGETS[mode], linestyle=":", linewidth=1, color=ax.lines[-1].get_color())
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent workers (connections)")
    ax.set_ylabel("durable results / s")
    ax.set_title(f"distribute throughput, one server process, SQLite ({os.cpu_count()} cores)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="dotted: targets")
    ax.set_ylim(bottom=0)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def report(points: list[Point], argv: list[str] | None) -> str:
    lines = ["## Throughput\n", preamble("benchmarks.throughput", argv)]
    lines.append(
        "\nOne server process on SQLite (default settings), trivial tasks answered instantly by protocol clients in "
        "2 other processes (1 for a single worker). Durable results/s = result rows of the run in the database / "
        "(last group commit - first task received). Each concurrency level gets a fresh server and campaign and one "
        "uncounted 1 s warm-up run; figures are medians of the runs; server CPU is user + system time of the server "
        "process (all threads) over the run.\n\n"
    )
    for mode, (label, _) in MODES.items():
        series = sorted((p for p in points if p.mode == mode), key=lambda p: p.workers)
        if not series:
            continue
        best = max(series, key=lambda p: p.rate)
        verdict = "meets" if best.rate >= TARGETS[mode] else "misses"
        lines.append(
            f"**{label}**: peak {fmt(best.rate)} durable results/s with {best.workers} "
            f"{'worker' if best.workers == 1 else 'workers'} "
            f"({verdict} the target of {fmt(TARGETS[mode])}/s).\n\n"
        )
        rows = [
            (
                p.workers,
                f"**{fmt(p.rate)}**",
                " / ".join(fmt(r.rate) for r in p.runs),
                f"{p.cpu_per_1000:.3f}",
                "yes" if any(r.ran_dry for r in p.runs) else "",
            )
            for p in series
        ]
        lines.append(table(("workers", "median results/s", "runs", "server CPU s / 1000 results", "ran dry"), rows))
        lines.append("\n")
    batch = {p.workers: p.rate for p in points if p.mode == "batch"}
    single = {p.workers: p.rate for p in points if p.mode == "single"}
    common = sorted(set(batch) & set(single))
    if common:
        ratios = ", ".join(f"{w}: {batch[w] / single[w]:.1f}x" for w in common if single[w])
        lines.append(f"Batched / one-per-frame, same workers: {ratios}.\n\n")
    lines.append(f"![throughput against concurrent workers]({PLOT.relative_to(ROOT)})\n")
    return "".join(lines)


def compare(other: str, seconds: float, runs: int, workers: dict[str, int], argv: list[str] | None, label: str) -> None:
    """A/B: the same configurations against this checkout and another source tree, runs interleaved."""
    from . import common

    head = preamble("benchmarks.throughput", argv)  # before BENCH_SOURCE is switched below
    sources = {"this checkout": str(common.SOURCE), "compared": str(Path(other).resolve())}
    rates: dict[tuple[str, str], list[float]] = {}
    for k in range(runs):
        for name, source in sources.items():
            os.environ["BENCH_SOURCE"] = source
            common.SOURCE = Path(source)
            for mode, n in workers.items():
                point = measure(mode, n, seconds, 1)
                rates.setdefault((name, mode), []).append(point.runs[0].rate)
                print(f"[{k + 1}/{runs}] {name}: {mode} {fmt(point.runs[0].rate)}/s", flush=True)
    os.environ["BENCH_SOURCE"] = sources["this checkout"]
    common.SOURCE = Path(sources["this checkout"])
    lines = [f"### Throughput A/B: {label}\n", head]
    lines.append(
        f"\n`this checkout` = {sources['this checkout']}, `compared` = {sources['compared']}; runs interleaved.\n\n"
    )
    rows = []
    for mode, n in workers.items():
        a = median(rates[("this checkout", mode)])
        b = median(rates[("compared", mode)])
        rows.append((f"{MODES[mode][0]}, {n} workers", fmt(a), fmt(b), f"{a / b:.2f}x" if b else "n/a"))
    lines.append(table(("configuration", "this checkout", "compared", "ratio"), rows))
    print("".join(lines))
    write_section(f"ab-{label}", "".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="length of one run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", default="1,4,16,64,256", help="concurrency levels of the sweep")
    parser.add_argument("--modes", default="batch,single")
    parser.add_argument("--compare", help="another distribute source tree to A/B against (instead of the sweep)")
    parser.add_argument("--label", default="compare", help="names the A/B section of BENCHMARKS.md")
    parser.add_argument("--no-write", action="store_true", help="print, do not touch BENCHMARKS.md")
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    if args.compare:
        compare(
            args.compare, args.seconds, args.runs, {m: (16 if m == "batch" else 64) for m in modes}, argv, args.label
        )
        return
    points = []
    for mode in modes:
        for workers in (int(w) for w in args.workers.split(",")):
            points.append(measure(mode, workers, args.seconds, args.runs))
    text = report(points, argv)
    print(text)
    if not args.no_write:
        plot(points)
        write_section("throughput", text)


if __name__ == "__main__":
    main()
