"""Connections: memory per idle worker connection, and dispatch latency with 1,000 active workers.

**Idle**: N worker connections say hello for a campaign whose only dataset is held by another
connection, so each gets `idle` and stays (a worker for "any" campaign would get `bye` instead).
The server's RSS (from /proc) is read at every step of the ramp; the growth per connection is the
slope of a least-squares line through those points. Load processes raise their `ulimit -n` with
`resource.setrlimit`.

**Active**: W workers with one slot each "compute" for a fixed time per task (like browsers working
through real tasks) and measure, client side, the time from sending a result to receiving the next
task. That is the dispatch latency a worker with one slot sees (more slots hide it entirely).

    python -m benchmarks.connections [--steps 1000,2500,5000,10000] [--active 1000] [--compute 1.0]
"""

from __future__ import annotations

import argparse
import time

from .common import TRIVIAL_KERNEL, Server, array_generator, fmt, median, preamble, table, write_section
from .loadclient import LoadGroup, LoadParams

__all__ = ["active_latency", "idle_ramp", "main"]

RSS_TARGET_KB = 40
LATENCY_TARGET_MS = 20.0


def _slope(xs: list[float], ys: list[float]) -> float:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else float("nan")


def idle_ramp(steps: list[int], processes: int) -> tuple[list[tuple[int, int]], dict[str, float]]:
    """One fresh server; connect idle workers step by step; returns [(connections, RSS bytes)] and facts."""
    # The holder takes the one task and stays silent: no heartbeat may close it during the run.
    with Server({"heartbeat_timeout": 86400}) as server:
        campaign = server.create_campaign(TRIVIAL_KERNEL, array_generator(1), name="idle", task_timeout=86400)
        cid = campaign["id"]
        server.wait_status(cid, ["running"])
        holder = LoadGroup(LoadParams(server.ws_url, cid, "idle", slots=1, hello_on_go=False), 1)
        idle = LoadGroup(LoadParams(server.ws_url, cid, "idle", slots=1, hello_on_go=False), processes)
        try:
            holder.connect(1)
            holder.go()  # takes the one dataset and never answers
            time.sleep(1.0)
            server.http.get("/-/health")
            points = [(0, server.rss_bytes())]
            connected = 0
            facts: dict[str, float] = {}
            started = time.monotonic()
            for step in steps:
                stats = idle.connect(step - connected)
                connected = stats.connections
                idle.go()  # hello from the new ones
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    health = server.http.get("/-/health").json()
                    if health.get("connections", 0) >= connected + 1:
                        break
                    time.sleep(0.2)
                time.sleep(2.0)  # let every session reach its idle wait
                points.append((connected, server.rss_bytes()))
                print(f"  {connected:>6} idle connections: server RSS {server.rss_bytes() / 2**20:.1f} MiB", flush=True)
                if stats.failed_connects:
                    facts["failed_connects"] = stats.failed_connects
                    break
            facts["ramp_seconds"] = time.monotonic() - started
            cpu0, t0 = server.cpu_seconds(), time.monotonic()
            time.sleep(10.0)
            facts["idle_cpu_share"] = (server.cpu_seconds() - cpu0) / (time.monotonic() - t0)
            facts["idle_connections"] = connected
            final = idle.stop()
            facts["idle_frames"] = final.idle_frames
            facts["closed_by_server"] = final.closed
        finally:
            idle.close()
            holder.close()
    return points, facts


def active_latency(workers: int, compute: float, seconds: float, runs: int, processes: int) -> list[dict[str, float]]:
    """`runs` runs of W paced one-slot workers on one server; latency percentiles per run."""
    out = []
    needed = int(workers / compute * (seconds + 3) * (runs + 1)) + 10_000
    with Server({"generator_low_water": 100_000_000}) as server:
        campaign = server.create_campaign(TRIVIAL_KERNEL, array_generator(needed), name="active", task_timeout=600)
        server.wait_status(campaign["id"], ["running"], timeout=600)
        for k in range(runs):
            params = LoadParams(server.ws_url, campaign["id"], "paced", slots=1, compute_seconds=compute, tag=f"a{k}")
            with LoadGroup(params, processes) as group:
                group.connect(workers)
                time.sleep(1.0)
                cpu0 = server.cpu_seconds()
                group.go()
                time.sleep(seconds + compute)
                stats = group.stop()
                cpu = server.cpu_seconds() - cpu0
            lat = sorted(stats.latencies_ms)
            if not lat:
                raise RuntimeError("no latency samples: did the workers get tasks?")

            def pct(q: float, lat: list[float] = lat) -> float:
                return lat[min(len(lat) - 1, int(q * len(lat)))]

            row = {
                "samples": len(lat),
                "p50": pct(0.50),
                "p90": pct(0.90),
                "p99": pct(0.99),
                "max": lat[-1],
                "rate": stats.results_sent / (seconds + compute),
                "cpu_share": cpu / (seconds + compute),
            }
            out.append(row)
            print(
                f"  {workers} active workers, run {k + 1}: p50 {row['p50']:.2f} ms, p99 {row['p99']:.2f} ms, "
                f"max {row['max']:.1f} ms over {len(lat)} tasks ({row['rate']:.0f} tasks/s, server CPU {row['cpu_share']:.0%})",
                flush=True,
            )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.connections", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", default="1000,2500,5000,7500,10000", help="idle connection counts of the ramp")
    parser.add_argument("--processes", type=int, default=4, help="load processes for the idle ramp")
    parser.add_argument("--active", type=int, default=1000, help="active workers for the latency test")
    parser.add_argument("--compute", type=float, default=1.0, help="seconds each active worker spends per task")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of one latency run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    head = preamble("benchmarks.connections", argv)  # before the runs: the load average at the start
    steps = [int(s) for s in args.steps.split(",")]

    ramps = []
    for k in range(args.runs):
        print(f"idle ramp {k + 1}/{args.runs}", flush=True)
        ramps.append(idle_ramp(steps, args.processes))
    slopes = [_slope([n for n, _ in pts], [r for _, r in pts]) / 1024 for pts, _ in ramps]
    totals = [(pts[-1][1] - pts[0][1]) / 1024 / max(pts[-1][0], 1) for pts, _ in ramps]
    reached = [facts["idle_connections"] for _, facts in ramps]
    idle_cpu = [facts["idle_cpu_share"] for _, facts in ramps]

    print(f"latency: {args.active} workers", flush=True)
    latency = active_latency(args.active, args.compute, args.seconds, args.runs, args.processes)

    lines = ["## Connections\n", head, "\n"]
    p99 = median(r["p99"] for r in latency)
    slope = median(slopes)
    lines.append(
        f"**Idle connections**: {fmt(median(reached))} held at once (target 10,000); server RSS grows "
        f"**{slope:.1f} KiB per connection** (median slope over {len(ramps)} ramps; target < {RSS_TARGET_KB} KB, "
        f"{'met' if slope < RSS_TARGET_KB * 1000 / 1024 else 'missed'}). Holding them costs "
        f"{median(idle_cpu):.1%} of a core (10 s measured right after the ramp, so it includes settling and the "
        "garbage collections the ramp set off; *Server cost* has the steady state).\n\n"
    )
    header = ["idle connections", *(f"RSS run {k + 1} (MiB)" for k in range(len(ramps)))]
    rows = []
    for i, (n, _) in enumerate(ramps[0][0]):
        rows.append([fmt(n), *(f"{pts[i][1] / 2**20:.1f}" if i < len(pts) else "" for pts, _ in ramps)])
    lines.append(table(header, rows))
    lines.append(
        f"\nSlopes (KiB/connection): {', '.join(f'{s:.1f}' for s in slopes)}; (RSS at the top - RSS with none) / N: "
        f"{', '.join(f'{t:.1f}' for t in totals)} KiB.\n\n"
    )
    lines.append(
        f"**Dispatch latency with {args.active} active workers** (one slot each, {args.compute:g} s of simulated compute "
        f"per task, so ≈ {args.active / args.compute:,.0f} tasks/s in all; time from a result sent to the next task "
        f"received, measured by the clients): p99 **{p99:.1f} ms** (target < {LATENCY_TARGET_MS:g} ms, "
        f"{'met' if p99 < LATENCY_TARGET_MS else 'missed'}).\n\n"
    )
    rows = [
        (
            k + 1,
            fmt(r["samples"]),
            f"{r['p50']:.2f}",
            f"{r['p90']:.2f}",
            f"{r['p99']:.2f}",
            f"{r['max']:.1f}",
            fmt(r["rate"]),
            f"{r['cpu_share']:.0%}",
        )
        for k, r in enumerate(latency)
    ]
    rows.append(
        (
            "median",
            "",
            *(f"{median(r[q] for r in latency):.2f}" for q in ("p50", "p90", "p99")),
            f"{median(r['max'] for r in latency):.1f}",
            fmt(median(r["rate"] for r in latency)),
            f"{median(r['cpu_share'] for r in latency):.0%}",
        )
    )
    lines.append(table(("run", "tasks", "p50 ms", "p90 ms", "p99 ms", "max ms", "tasks/s", "server CPU"), rows))
    text = "".join(lines)
    print(text)
    if not args.no_write:
        write_section("connections", text)


if __name__ == "__main__":
    main()
