"""Soak: one server for minutes with thousands of connected workers and a steady flow of tasks.

Not a CI test: a long run that shows what short benchmarks cannot, namely that nothing
accumulates. `--workers` protocol clients (`benchmarks.loadclient`, in `--processes` processes of
their own) hold one slot each and "compute" for `--compute` seconds (±50 %) per task, on a campaign
fed by a generator function (10,000,000 datasets, pulled lazily under the default back-pressure).
Every `--every` seconds the benchmark samples the server's RSS and open file descriptors
(/proc/PID/status, /proc/PID/fd), the tasks the clients hold (received - answered) and the result
rows in the database. At the end the clients stop answering and leave, and then:

- **memory**: the RSS slope over the steady part (after the first minute) should be ~0;
- **file descriptors**: the count returns to what it was before the workers connected;
- **tasks**: once the workers are gone and the server has stopped (a clean shutdown hands its
  prefetched datasets back), no dataset is leased; result rows = answers the clients sent = datasets
  done (nothing lost, nothing stored twice).

    python -m benchmarks.soak [--minutes 10] [--workers 2000] [--compute 2.0]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .common import TRIVIAL_KERNEL, Server, fmt, lazy_generator, preamble, table, write_section
from .connections import _slope
from .loadclient import LoadGroup, LoadParams

__all__ = ["main", "soak"]


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def soak(minutes: float, workers: int, compute: float, every: float, processes: int) -> dict:
    """Run the soak; returns the samples and the end-of-run checks."""
    out: dict = {"samples": []}
    with Server() as server:
        campaign = server.create_campaign(
            TRIVIAL_KERNEL, lazy_generator(10_000_000), name="soak", task_timeout=max(60, int(compute * 20))
        )
        cid = campaign["id"]
        time.sleep(3.0)  # the first batches are generated
        server.http.get("/-/health")
        out["fds_before"] = open_fds(server.pid)
        out["rss_before"] = server.rss_bytes()
        params = LoadParams(server.ws_url, cid, "paced", slots=1, compute_seconds=compute, tag="soak")
        group = LoadGroup(params, processes)
        try:
            stats = group.connect(workers)
            out["connected"] = stats.connections
            out["failed_connects"] = stats.failed_connects
            group.go()
            started = time.monotonic()
            cpu0 = server.cpu_seconds()
            duration = minutes * 60
            next_at = started
            while True:
                now = time.monotonic()
                if now >= next_at:
                    s = group.stats()
                    rows = server.query("SELECT COUNT(*) FROM result WHERE campaign = ?", (cid,))[0][0]
                    leased = server.query(
                        "SELECT COUNT(*) FROM dataset WHERE campaign = ? AND state = 'leased'", (cid,)
                    )[0][0]
                    sample = {
                        "t": now - started,
                        "rss": server.rss_bytes(),
                        "fds": open_fds(server.pid),
                        "connections": s.connections,
                        "held": s.tasks - s.results_sent,  # tasks the clients hold (received - answered)
                        "answered": s.results_sent,
                        "rows": rows,
                        "leased": leased,  # in storage: held by clients + prefetched in the server's queue
                        "cpu": server.cpu_seconds() - cpu0,
                    }
                    out["samples"].append(sample)
                    print(
                        f"  {sample['t']:6.0f} s: RSS {sample['rss'] / 2**20:6.1f} MiB, {sample['fds']} fds, "
                        f"{sample['connections']} connections, {sample['held']} tasks held, "
                        f"{fmt(sample['answered'])} answered, {fmt(rows)} result rows, {leased} leased in storage, "
                        f"server CPU {sample['cpu'] / max(sample['t'], 1e-9):.0%}",
                        flush=True,
                    )
                    if now - started >= duration:
                        break
                    next_at += every
                time.sleep(max(0.0, min(next_at, started + duration) - time.monotonic()))
            final = group.stop()  # stop answering; results in flight still arrive
            out["answered"] = final.results_sent
            out["tasks_received"] = final.tasks
            lat = sorted(final.latencies_ms)
            out["p50"] = lat[len(lat) // 2] if lat else float("nan")
            out["p99"] = lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan")
            time.sleep(2.0)
        finally:
            group.close()  # the workers leave
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if server.http.get("/-/health").json().get("connections", -1) == 0:
                break
            time.sleep(0.5)
        time.sleep(5.0)  # sessions wind down, leases are requeued, the last group commit lands
        out["connections_after"] = server.http.get("/-/health").json().get("connections")
        out["fds_after"] = open_fds(server.pid)
        out["rss_after"] = server.rss_bytes()
        out["leased_running"] = server.query(
            "SELECT COUNT(*) FROM dataset WHERE campaign = ? AND state = 'leased'", (cid,)
        )[0][0]
        stopping = time.monotonic()
        server.stop()  # clean shutdown: the final group commit, prefetched datasets handed back
        out["stop_seconds"] = time.monotonic() - stopping
        out["stop_code"] = server.process.returncode if server.process else None
        out["log_tail"] = [
            line
            for line in server.log_path.read_text(errors="replace").splitlines()
            if "ERROR" in line or "WARN" in line
        ][-5:]
        out["leased_after"] = server.query(
            "SELECT COUNT(*) FROM dataset WHERE campaign = ? AND state = 'leased'", (cid,)
        )[0][0]
        out["rows_after"] = server.query("SELECT COUNT(*) FROM result WHERE campaign = ?", (cid,))[0][0]
        out["done_after"] = server.query("SELECT COUNT(*) FROM dataset WHERE campaign = ? AND state = 'done'", (cid,))[
            0
        ][0]
        out["duplicates"] = server.query(
            "SELECT COUNT(*) FROM (SELECT dataset FROM result WHERE campaign = ? GROUP BY dataset HAVING COUNT(*) > 1)",
            (cid,),
        )[0][0]
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2000)
    parser.add_argument("--compute", type=float, default=2.0, help="seconds each worker spends per task (±50 %%)")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--processes", type=int, default=4, help="load processes")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    head = preamble("benchmarks.soak", argv)  # before the runs: the load average at the start

    r = soak(args.minutes, args.workers, args.compute, args.every, args.processes)
    samples = r["samples"]
    steady = [s for s in samples if s["t"] >= 60] or samples
    slope = _slope([s["t"] / 60 for s in steady], [s["rss"] / 2**20 for s in steady]) if len(steady) > 1 else 0.0
    first, last = steady[0], steady[-1]
    duration = samples[-1]["t"]
    rate = r["answered"] / duration if duration else float("nan")
    cpu_share = samples[-1]["cpu"] / duration if duration else float("nan")
    memory_flat = abs(slope) * 60 < 0.05 * first["rss"] / 2**20  # < 5 % an hour
    fds_back = r["fds_after"] <= r["fds_before"]
    no_leaks = r["leased_after"] == 0 and r["rows_after"] == r["answered"] == r["done_after"] and not r["duplicates"]

    lines = ["## Soak\n", head, "\n"]
    lines.append(
        f"One server (SQLite) for {duration / 60:.1f} minutes with {fmt(r['connected'])} connected workers "
        f"({args.processes} load processes; one slot each, {args.compute:g} s ± 50 % of simulated compute per task), "
        f"on a generator-function campaign under the default back-pressure: {fmt(rate)} tasks/s in all, server CPU "
        f"{cpu_share:.0%} of a core, dispatch latency p50 {r['p50']:.1f} ms / p99 {r['p99']:.1f} ms. Sampled every "
        f"{args.every:g} s (every {max(1, len(samples) // 12)}th sample shown):\n\n"
    )
    step = max(1, len(samples) // 12)
    shown = samples[::step]
    if shown[-1] is not samples[-1]:
        shown.append(samples[-1])
    lines.append(
        table(
            (
                "time",
                "server RSS MiB",
                "open fds",
                "connections",
                "tasks held by workers",
                "answered",
                "result rows",
                "leased in storage",
            ),
            [
                (
                    f"{s['t'] / 60:.1f} min",
                    f"{s['rss'] / 2**20:.1f}",
                    s["fds"],
                    fmt(s["connections"]),
                    fmt(s["held"]),
                    fmt(s["answered"]),
                    fmt(s["rows"]),
                    fmt(s["leased"]),
                )
                for s in shown
            ],
        )
    )
    lines.append("\n")
    lines.append(
        table(
            ("check", "measured", ""),
            [
                (
                    "memory flat",
                    f"RSS slope {slope:+.2f} MiB/min after the first minute "
                    f"({first['rss'] / 2**20:.1f} → {last['rss'] / 2**20:.1f} MiB)",
                    "flat" if memory_flat else "**grows**",
                ),
                (
                    "file descriptors back to baseline",
                    f"{r['fds_before']} before the workers, {max(s['fds'] for s in samples)} at most, "
                    f"{r['fds_after']} after they left ({r['connections_after']} connections)",
                    "yes" if fds_back else "**no**",
                ),
                (
                    "no leaked tasks",
                    f"leased after the workers left: {fmt(r['leased_running'])} in the running server's queue, "
                    f"{fmt(r['leased_after'])} after its clean shutdown; result rows {fmt(r['rows_after'])}, "
                    f"answers sent {fmt(r['answered'])}, datasets done {fmt(r['done_after'])}, "
                    f"datasets with two results {r['duplicates']} (the server stopped in {r['stop_seconds']:.1f} s, "
                    f"exit code {r['stop_code']})",
                    "none" if no_leaks else "**leak**",
                ),
            ],
        )
    )
    text = "".join(lines)
    print(text)
    print("server log, errors and warnings:", *r["log_tail"], sep="\n  ")
    if not args.no_write:
        write_section("soak", text)


if __name__ == "__main__":
    main()
