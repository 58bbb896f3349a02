"""Generation: 1,000,000 datasets generated and stored, and time to first task after an upload.

- **array**: the generator's main() returns an array of N tiny datasets; the server stores it in
  batches. Timed from the upload (POST) to the campaign becoming `running` (every dataset stored).
- **generator function**: main() is a generator function, pulled a batch at a time; same timing.
  Lazy generators pause while more than `generator_low_water` datasets wait unleased; that
  back-pressure is what a real campaign wants, so here it is raised above N (`--low-water`) to
  measure the generation rate itself.
- **first task**: a worker connected for the new campaign right after the upload returns; timed
  from the start of the upload to the first `tasks` frame it receives (generator function, default
  settings).

    python -m benchmarks.generation [--datasets 1000000] [--runs 3] [--jitless 0|1]

`--jitless` sets the server's `sandbox_jitless` (V8 with or without its JIT; default: the setting's default).
"""

from __future__ import annotations

import argparse
import time

from .common import TRIVIAL_KERNEL, Server, array_generator, fmt, lazy_generator, median, preamble, table, write_section
from .loadclient import LoadGroup, LoadParams

__all__ = ["first_task", "generate", "main"]

TARGET_SECONDS = 30.0
FIRST_TASK_TARGET = 1.0


def generate(kind: str, n: int, low_water: int, jitless: int | None = None) -> tuple[float, float]:
    """Upload a generator of n datasets; returns (seconds until all are stored, server CPU seconds)."""
    source = array_generator(n) if kind == "array" else lazy_generator(n)
    settings: dict[str, int] = {"generator_low_water": low_water}
    if jitless is not None:
        settings["sandbox_jitless"] = jitless
    with Server(settings) as server:
        cpu0 = server.cpu_seconds()
        started = time.monotonic()
        campaign = server.create_campaign(TRIVIAL_KERNEL, source, name=f"gen-{kind}", task_timeout=600)
        # Poll the database directly: the API's counts would add their own load to the server.
        while True:
            status = server.query("SELECT status, generation_error FROM campaign WHERE id = ?", (campaign["id"],))[0]
            if status[0] != "generating":
                break
            if time.monotonic() - started > 600:
                raise TimeoutError("generation took more than 10 minutes")
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        if status[0] == "failed":
            raise RuntimeError(f"generation failed: {status[1]}")
        stored = server.query("SELECT COUNT(*) FROM dataset WHERE campaign = ?", (campaign["id"],))[0][0]
        assert stored == n, (stored, n)
        return elapsed, server.cpu_seconds() - cpu0


def first_task(n: int) -> float:
    """Seconds from the start of an upload (generator function) to the first task a worker receives."""
    with Server() as server:
        params = LoadParams(server.ws_url, None, "batch", slots=1, hello_on_go=False)
        with LoadGroup(params, 1) as group:  # the load process is up before the clock starts
            group.connect(0)
            started = time.time()
            campaign = server.create_campaign(TRIVIAL_KERNEL, lazy_generator(n), name="first-task", task_timeout=600)
            group.connect(1, campaign=campaign["id"])
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                time.sleep(0.02)
                stats = group.stats()
                if stats.first_task:
                    return stats.first_task - started
        raise TimeoutError("no task within 30 s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.generation", description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--low-water", type=int, default=100_000_000, help="generator_low_water for the rate runs")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--jitless", type=int, choices=(0, 1), help="the server's sandbox_jitless (default: its default)"
    )
    args = parser.parse_args(argv)
    head = preamble("benchmarks.generation", argv)  # before the runs: the load average at the start

    results: dict[str, list[tuple[float, float]]] = {"array": [], "generator function": []}
    firsts: list[float] = []
    for k in range(args.runs):
        for kind in results:
            kind_name = "array" if kind == "array" else "function"
            elapsed, cpu = generate(kind_name, args.datasets, args.low_water, args.jitless)
            results[kind].append((elapsed, cpu))
            print(
                f"  run {k + 1}: {kind}: {fmt(args.datasets)} datasets in {elapsed:.1f} s (server CPU {cpu:.1f} s)",
                flush=True,
            )
        firsts.append(first_task(10_000_000))
        print(f"  run {k + 1}: first task {firsts[-1] * 1000:.0f} ms after the upload started", flush=True)

    lines = ["## Generation\n", head, "\n"]
    lines.append(
        f"{fmt(args.datasets)} tiny datasets (`{{i: k}}`), from the upload (POST) until the campaign is `running` "
        f"(every dataset stored in SQLite); `generator_low_water` raised to {fmt(args.low_water)} so back-pressure "
        f"does not pause the lazy generator. Target: < {TARGET_SECONDS:g} s.\n\n"
    )
    rows = []
    for kind, runs in results.items():
        t = median(e for e, _ in runs)
        rows.append(
            (
                kind,
                f"**{t:.1f}**",
                " / ".join(f"{e:.1f}" for e, _ in runs),
                fmt(args.datasets / t),
                f"{median(c for _, c in runs):.1f}",
                "met" if t < TARGET_SECONDS else "missed",
            )
        )
    lines.append(table(("generator", "median s", "runs (s)", "datasets/s", "server CPU s", "target"), rows))
    ratio = median(e for e, _ in results["generator function"]) / median(e for e, _ in results["array"])
    lines.append(f"\nGenerator function / array time: {ratio:.2f}x (same run).\n\n")
    t = median(firsts)
    lines.append(
        f"**Time to first task** with a generator function (10,000,000 datasets, default settings), from the start of "
        f"the upload to the first `tasks` frame at a worker connected for the campaign: **{t * 1000:.0f} ms** "
        f"(runs: {', '.join(f'{f * 1000:.0f}' for f in firsts)} ms; target < {FIRST_TASK_TARGET * 1000:.0f} ms, "
        f"{'met' if t < FIRST_TASK_TARGET else 'missed'}).\n"
    )
    text = "".join(lines)
    print(text)
    if not args.no_write:
        write_section("generation", text)


if __name__ == "__main__":
    main()
