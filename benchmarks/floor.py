"""The stack's floor: what the WebSocket layer alone costs, next to distribute on the same load.

The same load client drives distribute's server and three minimal servers (`benchmarks.floor_apps`)
that answer each frame with a one-task frame and do nothing else: one task per frame (slot 1, a
round trip each) for `--workers` connections, and idle connections for memory. distribute cannot
be faster than the Quart/Hypercorn floor it is built on; the two leaner stacks show what moving
/ws off Quart would buy.

    python -m benchmarks.floor [--workers 16] [--idle 2000] [--seconds 4] [--runs 3]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import time

from .common import (
    PYTHON,
    ROOT,
    TRIVIAL_KERNEL,
    Server,
    _die_with_parent,
    array_generator,
    fmt,
    median,
    preamble,
    proc_cpu_seconds,
    proc_rss_bytes,
    table,
    write_section,
)
from .loadclient import LoadGroup, LoadParams

__all__ = ["main"]

KINDS = ("distribute", "quart", "trio-websocket", "wsproto")


class _App:
    """A floor app as a subprocess (or distribute's real server), with a campaign for the latter."""

    def __init__(self, kind: str, datasets: int) -> None:
        self.kind = kind
        self.server: Server | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.campaign: int | None = 1
        if kind == "distribute":
            self.server = Server({"generator_low_water": 100_000_000}).start()
            campaign = self.server.create_campaign(TRIVIAL_KERNEL, array_generator(datasets), name="floor")
            self.server.wait_status(campaign["id"], ["running"], timeout=600)
            self.campaign = campaign["id"]
            self.pid, self.url = self.server.pid, self.server.ws_url
        else:
            self.process = subprocess.Popen(
                [PYTHON, "-m", "benchmarks.floor_apps", kind],
                stdout=subprocess.PIPE,
                cwd=ROOT,
                preexec_fn=_die_with_parent,
            )
            assert self.process.stdout is not None
            line = self.process.stdout.readline().decode()
            url = re.search(r"http://\S+", line)
            if url is None:
                raise RuntimeError(f"floor app {kind} did not start: {line!r}")
            self.pid, self.url = self.process.pid, url.group(0).replace("http://", "ws://") + "/ws"

    def close(self) -> None:
        if self.server is not None:
            self.server.cleanup()
        if self.process is not None:
            self.process.kill()
            self.process.wait()


def round_trips(kind: str, workers: int, seconds: float) -> tuple[float, float]:
    """(round trips/s, server CPU µs per round trip) with one-slot workers answering at once."""
    app = _App(kind, int(12_000 * (seconds + 2)))
    try:
        with LoadGroup(LoadParams(app.url, app.campaign, "single", slots=1), 1 if workers == 1 else 2) as group:
            group.connect(workers)
            group.go()
            time.sleep(1.0)  # warm-up
            before = group.stats().tasks
            cpu0, t0 = proc_cpu_seconds(app.pid), time.monotonic()
            time.sleep(seconds)
            cpu = proc_cpu_seconds(app.pid) - cpu0
            elapsed = time.monotonic() - t0
            done = group.stats().tasks - before
        return done / elapsed, cpu / max(done, 1) * 1e6
    finally:
        app.close()


def idle_rss(kind: str, n: int) -> float:
    """Server RSS growth per idle connection (KiB), between n/4 and n connections."""
    app = _App(kind, 10)
    try:
        mode = "idle"
        with LoadGroup(LoadParams(app.url, app.campaign, mode, slots=1, hello_on_go=False), 2) as group:
            group.connect(n // 4)
            group.go()
            time.sleep(2.0)
            low = proc_rss_bytes(app.pid)
            group.connect(n - n // 4)
            time.sleep(3.0)
            high = proc_rss_bytes(app.pid)
        return (high - low) / (n - n // 4) / 1024
    finally:
        app.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floor", description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    head = preamble("benchmarks.floor", argv)  # before the runs: the load average at the start
    rates: dict[str, list[tuple[float, float]]] = {k: [] for k in KINDS}
    memory: dict[str, list[float]] = {k: [] for k in KINDS}
    for k in range(args.runs):
        for kind in KINDS:  # interleaved, so the machine's state hits every stack alike
            rates[kind].append(round_trips(kind, args.workers, args.seconds))
            memory[kind].append(idle_rss(kind, args.idle))
            rate, cpu = rates[kind][-1]
            print(
                f"  run {k + 1}: {kind:15} {fmt(rate)} round trips/s, {cpu:.0f} µs CPU each, {memory[kind][-1]:.1f} KiB/idle connection",
                flush=True,
            )
    lines = ["### The stack's floor\n", head, "\n"]
    lines.append(
        f"One task per frame (slot 1, a round trip each) with {args.workers} connections, and RSS growth per idle "
        f"connection ({args.idle // 4:,} → {args.idle:,} connections), for distribute's server and for three "
        "minimal servers that only answer each frame with a one-task frame (`benchmarks/floor_apps.py`). "
        "Interleaved runs; medians.\n\n"
    )
    base = median(r for r, _ in rates["quart"])
    rows = [
        (
            kind,
            f"**{fmt(median(r for r, _ in rates[kind]))}**",
            f"{median(c for _, c in rates[kind]):.0f}",
            f"{median(r for r, _ in rates[kind]) / base:.2f}",
            f"{median(memory[kind]):.1f}",
        )
        for kind in KINDS
    ]
    lines.append(
        table(
            ("server", "round trips/s", "server CPU µs / round trip", "vs Quart floor", "KiB / idle connection"), rows
        )
    )
    text = "".join(lines)
    print(text)
    if not args.no_write:
        write_section("floor", text)


if __name__ == "__main__":
    main()
