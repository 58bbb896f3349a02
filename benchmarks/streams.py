"""Streams: do `distribute results --follow` and the raw event stream keep up with the durable rate?

One server process on SQLite; protocol clients in 2 other processes (`benchmarks.loadclient`) answer
every task of a campaign at full speed until it completes. Meanwhile two readers follow it from the
start: the real CLI, `python -m distribute results ID --follow`, as a subprocess whose JSON lines are
counted as they arrive, and a raw SSE reader (httpx, in a thread) counting `result` events.

All three rates share one window start, the first result's `created` in the database:
- durable = results / (last result's `created` - first result's `created`) (the group commits);
- delivered = results / (arrival of the reader's last result - the same start).
A reader that keeps up finishes just after the last group commit, so delivered / durable is near 1.
Each figure is the median of `--runs` campaigns.

    python -m benchmarks.streams [--datasets 40000] [--workers 16] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import threading
import time
from dataclasses import dataclass

import httpx

from .common import PYTHON, SOURCE, TRIVIAL_KERNEL, Server, array_generator, fmt, median, preamble, table, write_section
from .loadclient import LoadGroup, LoadParams

__all__ = ["main"]

TARGET = 0.95  # delivered / durable


@dataclass
class Run:
    results: int
    durable: float  # results / s
    follow: float
    sse: float
    follow_count: int
    sse_count: int


class Reader(threading.Thread):
    """Counts result lines (or events) and remembers when the last one arrived."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.count = 0
        self.last = 0.0
        self.error: BaseException | None = None

    def seen(self, n: int) -> None:
        if n:
            self.count += n
            self.last = time.time()


class FollowReader(Reader):
    def __init__(self, server: Server, campaign: int) -> None:
        super().__init__()
        env = {**os.environ, "DISTRIBUTE_SERVER": server.url, "DISTRIBUTE_TOKEN": server.token}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SOURCE), env.get("PYTHONPATH")) if p)
        command = [PYTHON, "-m", "distribute", "results", str(campaign), "--follow", "--format", "json"]
        self.process = subprocess.Popen(command, env=env, cwd=SOURCE, stdout=subprocess.PIPE)

    def run(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        while chunk := self.process.stdout.read1(1 << 16):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            self.seen(len(lines))


class SseReader(Reader):
    def __init__(self, server: Server, campaign: int) -> None:
        super().__init__()
        self.url = f"{server.url}/api/campaigns/{campaign}/events"
        self.headers = {"Authorization": f"Bearer {server.token}"}

    def run(self) -> None:
        try:
            with httpx.stream("GET", self.url, headers=self.headers, timeout=60) as response:
                for line in response.iter_lines():
                    if line == "event: result":
                        self.seen(1)
                    elif line == "event: complete":
                        return
        except BaseException as exc:  # reported by the run
            self.error = exc


def one_run(datasets: int, workers: int, k: int) -> Run:
    with Server({"generator_low_water": 100_000_000}) as server:
        campaign = server.create_campaign(TRIVIAL_KERNEL, array_generator(datasets), name="streams", task_timeout=3600)
        campaign_id = campaign["id"]
        server.wait_status(campaign_id, ["running"], timeout=600)
        params = LoadParams(server.ws_url, campaign_id, "batch", slots=256, tag=f"streams-{k}")
        follow, sse = FollowReader(server, campaign_id), SseReader(server, campaign_id)
        follow.start()
        sse.start()
        with LoadGroup(params, 2) as group:
            group.connect(workers)
            group.go()
            server.wait_status(campaign_id, ["complete"], timeout=600)
            group.stop()
        follow.process.wait(120)
        follow.join(10)
        sse.join(120)
        if sse.error is not None:
            raise RuntimeError(f"the SSE reader failed: {sse.error!r}")
        count, first, last = server.query("SELECT COUNT(*), MIN(created), MAX(created) FROM result")[0]
    durable = count / (last - first)
    run = Run(
        count, durable, follow.count / (follow.last - first), sse.count / (sse.last - first), follow.count, sse.count
    )
    print(
        f"  run {k + 1}: durable {fmt(run.durable)}/s, --follow {fmt(run.follow)}/s ({run.follow_count} lines),"
        f" SSE {fmt(run.sse)}/s ({run.sse_count} events)",
        flush=True,
    )
    return run


def report(runs: list[Run], datasets: int, workers: int, argv: list[str] | None) -> str:
    durable = median(r.durable for r in runs)
    follow = median(r.follow / r.durable for r in runs)
    sse = median(r.sse / r.durable for r in runs)
    lines = ["## Streams\n", preamble("benchmarks.streams", argv)]
    lines.append(
        f"\nOne server process on SQLite; a campaign of {datasets:,} trivial datasets answered at full speed by "
        f"{workers} protocol clients (256 slots each, batched frames) in 2 other processes, while `distribute "
        "results --follow` (the real CLI, a subprocess; lines counted) and a raw SSE reader (httpx) follow it from "
        "the start. Rates share one start, the first result's `created`: durable = results / last group commit, "
        "delivered = results / arrival of the reader's last result. Ratios are medians of per-run ratios; target: "
        f"delivered / durable >= {TARGET:.2f}. The readers share the server process's one event loop (and this "
        "machine's cores) with the workers' group commits, so the ratio says how much of that process a stream "
        "takes; see the load average above for what else ran.\n\n"
    )
    rows = [
        (
            k + 1,
            fmt(r.durable),
            f"{fmt(r.follow)} ({r.follow / r.durable:.3f})",
            f"{fmt(r.sse)} ({r.sse / r.durable:.3f})",
            f"{r.follow_count} / {r.sse_count} / {r.results}",
        )
        for k, r in enumerate(runs)
    ]
    lines.append(
        table(
            (
                "run",
                "durable results/s",
                "--follow results/s (ratio)",
                "SSE results/s (ratio)",
                "lines / events / rows",
            ),
            rows,
        )
    )
    verdict = "meets" if min(follow, sse) >= TARGET else "misses"
    lines.append(
        f"\n**Median**: durable {fmt(durable)}/s; `--follow` delivers {follow:.3f} of it, the raw event stream "
        f"{sse:.3f} ({verdict} the target of {TARGET:.2f}).\n"
    )
    return "".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.streams", description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", type=int, default=40_000, help="datasets per campaign (one campaign per run)")
    parser.add_argument("--workers", type=int, default=16, help="load connections")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print, do not touch BENCHMARKS.md")
    args = parser.parse_args(argv)
    runs = [one_run(args.datasets, args.workers, k) for k in range(args.runs)]
    text = report(runs, args.datasets, args.workers, argv)
    print(text)
    if not args.no_write:
        write_section("streams", text)


if __name__ == "__main__":
    main()
