"""Server cost: CPU seconds of the server process per 1,000 tasks and per connected worker-hour.

CPU time is user + system time of the server process (all its threads) from /proc/PID/stat,
sampled around each measurement window.

- **per 1,000 tasks**: at full speed with batched frames (16 workers x 256 slots) and with one
  task per frame (64 workers x 1 slot);
- **per idle worker-hour**: N idle connections (hello for a campaign with nothing to hand out);
- **per browser-like worker-hour**: W connected workers each finishing one task per second on
  average (one slot, compute time uniform in 0.5-1.5 s), the shape of real browsers on tiny tasks.

    python -m benchmarks.server_cost [--idle 1000] [--browsers 100] [--seconds 20] [--runs 3]
"""

from __future__ import annotations

import argparse
import time

from .common import TRIVIAL_KERNEL, Server, array_generator, fmt, median, preamble, table, write_section
from .loadclient import LoadGroup, LoadParams
from .throughput import measure

__all__ = ["browser_cost", "idle_cost", "main"]


def idle_cost(n: int, seconds: float) -> float:
    """Server CPU share (cores) while holding n idle worker connections."""
    # The holder takes the one task and stays silent: no heartbeat may close it during the run.
    with Server({"heartbeat_timeout": 86400}) as server:
        campaign = server.create_campaign(TRIVIAL_KERNEL, array_generator(1), name="idle", task_timeout=86400)
        server.wait_status(campaign["id"], ["running"])
        with (
            LoadGroup(LoadParams(server.ws_url, campaign["id"], "idle", hello_on_go=False), 1) as holder,
            LoadGroup(LoadParams(server.ws_url, campaign["id"], "idle", hello_on_go=False), 2) as idle,
        ):
            holder.connect(1)
            holder.go()
            time.sleep(1.0)
            idle.connect(n)
            idle.go()
            time.sleep(3.0)
            cpu0, t0 = server.cpu_seconds(), time.monotonic()
            time.sleep(seconds)
            return (server.cpu_seconds() - cpu0) / (time.monotonic() - t0)


def browser_cost(n: int, seconds: float) -> tuple[float, float]:
    """(server CPU share, tasks/s) with n workers finishing a task per second each on average."""
    datasets = int(n * (seconds + 10) * 1.5) + 1000
    with Server({"generator_low_water": 100_000_000}) as server:
        campaign = server.create_campaign(TRIVIAL_KERNEL, array_generator(datasets), name="browsers", task_timeout=600)
        server.wait_status(campaign["id"], ["running"])
        params = LoadParams(server.ws_url, campaign["id"], "paced", slots=1, compute_seconds=1.0, tag="b")
        with LoadGroup(params, 2) as group:
            group.connect(n)
            group.go()
            time.sleep(3.0)
            before = group.stats().results_sent
            cpu0, t0 = server.cpu_seconds(), time.monotonic()
            time.sleep(seconds)
            cpu = server.cpu_seconds() - cpu0
            elapsed = time.monotonic() - t0
            after = group.stats().results_sent
        return cpu / elapsed, (after - before) / elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.server_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--idle", type=int, default=1000, help="idle connections")
    parser.add_argument("--browsers", type=int, default=100, help="browser-like workers")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each measurement window")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    head = preamble("benchmarks.server_cost", argv)  # before the runs: the load average at the start

    batch = measure("batch", 16, 4.0, args.runs)
    single = measure("single", 64, 4.0, args.runs)
    idle = []
    browsers = []
    for k in range(args.runs):
        idle.append(idle_cost(args.idle, args.seconds))
        print(f"  run {k + 1}: {args.idle} idle connections: {idle[-1]:.2%} of a core", flush=True)
        browsers.append(browser_cost(args.browsers, args.seconds))
        print(
            f"  run {k + 1}: {args.browsers} browser-like workers: {browsers[-1][0]:.2%} of a core, {browsers[-1][1]:.0f} tasks/s",
            flush=True,
        )

    idle_share = median(idle)
    browser_share = median(s for s, _ in browsers)
    browser_rate = median(r for _, r in browsers)
    lines = ["## Server cost\n", head, "\n"]
    rows = [
        (
            "per 1,000 tasks, batched frames (16 workers x 256 slots)",
            f"{batch.cpu_per_1000:.3f} s",
            f"at {fmt(batch.rate)} tasks/s",
        ),
        (
            "per 1,000 tasks, one task per frame (64 workers x 1 slot)",
            f"{single.cpu_per_1000:.3f} s",
            f"at {fmt(single.rate)} tasks/s",
        ),
        (
            "per idle worker-hour",
            f"{idle_share * 3600 / args.idle:.3f} s",
            f"{args.idle} idle connections cost {idle_share:.2%} of a core",
        ),
        (
            "per browser-like worker-hour (≈ 1 task/s)",
            f"{browser_share * 3600 / args.browsers:.2f} s",
            f"{args.browsers} workers, {browser_rate:.0f} tasks/s, {browser_share:.1%} of a core "
            f"= {browser_share / browser_rate * 1000:.3f} s per 1,000 tasks",
        ),
    ]
    lines.append(table(("server CPU", "median", "measured as"), rows))
    lines.append(
        f"\nFor comparison, the seed measured about 7 % of a micro instance for 10 browsers; here 10 browser-like "
        f"workers would cost about {browser_share / args.browsers * 10:.2%} of a core (scaled linearly from "
        f"{args.browsers}). Runs: idle {', '.join(f'{s:.2%}' for s in idle)}; browser-like "
        f"{', '.join(f'{s:.1%}' for s, _ in browsers)} of a core.\n"
    )
    text = "".join(lines)
    print(text)
    if not args.no_write:
        write_section("server-cost", text)


if __name__ == "__main__":
    main()
