"""Scale-out: durable results/s with 1, 2 and 4 server processes on one PostgreSQL database.

N `distribute serve` processes share one database of a throwaway PostgreSQL cluster (started with
`tests/pg.py`'s code: Debian's binaries, fsync off, synchronous_commit off); SQLite with one process
is the baseline. The load is the throughput benchmark's batched configuration: protocol clients
(`benchmarks.loadclient`) in `--clients` separate processes, `--workers` connections in all, 256
slots each, answering every `tasks` frame at once with one `results` frame. Each client process
connects to one server, as a TCP load balancer would spread them (client process i -> server
i mod N), so every configuration puts the same client processes and connections on the machine.

Durable results/s = result rows of the run in the database (told apart by the clients' `host`) /
(last commit - first task any client received). Unlike `benchmarks.throughput`, which takes the
newest row's `created` (the start of its group commit), the end is found by polling the row count
after the clients stop until it reaches the results they sent: on PostgreSQL under load one group
commit can take seconds, and `created` would hide it. Every
configuration has its own database, servers and one campaign sized so that no run runs dry, set up
once; then the runs are interleaved (run 1 of every configuration, then run 2, ...), each after
the same uncounted warm-up. Per run it records the CPU time of every server process, of the
PostgreSQL cluster (postmaster and all its children, from /proc), of the clients, the whole
machine's busy share of its cores (/proc/stat), and samples `pg_stat_activity` every 50 ms to see
what PostgreSQL backends wait for.

    python -m benchmarks.scale_out [--seconds 4] [--runs 3] [--procs 1,2,4] [--env refill_batch=2048]

Target: N processes >= 0.85 x N x one process, up to the core count.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2

from .common import (
    CLOCK_TICKS,
    TRIVIAL_KERNEL,
    Server,
    array_generator,
    fmt,
    median,
    preamble,
    proc_cpu_seconds,
    table,
    write_section,
)
from .loadclient import LoadGroup, LoadParams, merge_stats

__all__ = ["main"]

TARGET = 0.85
SLOTS = 256
# Results/s a configuration might reach (about 2x what this machine measured): sizes each campaign
# so that no run runs dry.
RATE_GUESS = {"sqlite": 30_000, "postgres": 20_000}
# Findings of the profiles and experiments behind this benchmark (not re-measured by a run).
NOTES = (
    "\n"
    "**Notes** (profiles and A/Bs of 2026-11-26 02:00 UTC on the source tree `/tmp/snap-so`; not "
    "re-measured by a run of this module):\n"
    "\n"
    "- *One process is bounded by its own serial group commit on PostgreSQL.* `Dispatcher._flush_loop` "
    "awaits each `store_outcomes` before it starts the next, so one process's commits run on one backend "
    "at a time: its PostgreSQL backends average 1.2 running, the machine is not full (90 % busy), and "
    "after the clients stop it still takes 0.8-2.5 s to commit the results it already received "
    "(8,000-25,000 results waiting in the server's memory; SQLite 0.3-0.5 s). Dispatch does not wait for "
    "commits, so nothing bounds that backlog.\n"
    "- *Two and four processes are bounded by the 2 cores.* The machine is 98-99 % busy and PostgreSQL "
    "takes 140 % of a core. The CPU per result does not grow with N (server 48-52 µs, PostgreSQL 160-175 "
    "µs), so locks do not inflate the work; there is no spare core to do it on. Lock waits do grow with N"
    " (backends waiting on `Lock:transactionid`: 0.02, 0.15, 0.50 with 1, 2, 4 processes; `Lock:tuple` "
    "0.17 with 4): every group commit of every process ends with `UPDATE campaign SET compute_ms = "
    "compute_ms + ?` on the one campaign row, and the foreign-key check of every `result` row locks that "
    "same row FOR KEY SHARE. *Idle in transaction* (0.4, 0.7, 1.7 backends) is server processes "
    "descheduled in the middle of a transaction, holding those locks.\n"
    "- *Where PostgreSQL's CPU goes* (`perf record -g` on the database's backends, 2 processes, 6 s): "
    "inserting index entries (`ExecInsertIndexTuples`) 22.5 %, the largest share that can be attributed; "
    "`id = ANY(array)` / `state IN` evaluation 3 %, following index entries to heap tuples "
    "(`heap_hot_search_buffer`) 3 %, parsing and planning 3 %, row locks (`heap_lock_tuple`) 1.3 %, "
    "foreign-key checks under 0.5 %. That fits the two A/Bs below: fewer index entries help, dropping a "
    "foreign key does not.\n"
    "- *Less PostgreSQL work per result* (three copies of the source tree, PostgreSQL with 1 and 2 "
    "processes, 3 interleaved runs of 3 s, medians). Dropping the foreign key `result.campaign` and its "
    "index (implied by `result.dataset` → `dataset.campaign`; the index is a prefix of "
    "`result_by_campaign`): no measurable change (PostgreSQL 145-151 µs per result against 150). Also "
    "replacing `dataset_expiry (state, lease_until)` by a partial index `(lease_until) WHERE state = "
    "'leased'`: a dataset that becomes done no longer adds an entry to it (the update is not HOT, since "
    "`state` is indexed). Result: PostgreSQL 129 / 118 µs per result against 150 / 150, and 8,718 / "
    "11,058 results/s against 8,342 / 9,352 with 1 / 2 processes (ratio 0.63 against 0.56). The runs "
    "spread ±15 %, but 5 of the 6 interleaved pairs improved on both counts.\n"
    "- *Server settings* (`--env flush_interval=0.1 --env flush_batch=20000 --env refill_batch=4096`, 2 "
    "runs of 3 s, load average 4.1): 6,602 / 7,985 results/s with 1 / 2 processes (ratio 0.60). Bigger "
    "group commits cut PostgreSQL's CPU per result to 132-136 µs, but the uncommitted backlog grew "
    "(3.4-5.9 s to commit after the clients stopped) and the machine was still 98-99 % busy, so "
    "throughput did not rise. These settings do not lift the bound; the table above uses the defaults.\n"
    "- *What would lift it*: (1) PostgreSQL on cores (or a machine) of its own, as `docs/scale-out.md` "
    "deploys it: on this 2-core machine the server processes and the database compete for the same CPU. "
    "(2) Less database work per result: the partial expiry index above; the same for `dataset_lease` "
    "(only pending rows are leased); one `UPDATE … WHERE id IN (SELECT … ORDER BY id FOR UPDATE) "
    "RETURNING id` in `store_outcomes` instead of a `SELECT … FOR UPDATE` followed by the `UPDATE` (not "
    "measured). (3) `compute_ms` off the shared campaign row (one row per process, summed when read), so "
    "that group commits of different processes stop queueing behind each other. (4) Back-pressure from "
    "commits to dispatch, so that a slow database bounds the backlog of uncommitted results.\n"
)
COMMIT_TIMEOUT = 60.0  # s to wait after "stop" for every result the clients sent to be committed
WAIT_SAMPLE_SECONDS = 0.05


# --------------------------------------------------------------------------- CPU accounting from /proc


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


def cluster_cpu_seconds(postmaster: int) -> float:
    """CPU of a PostgreSQL cluster: the postmaster (with its reaped children) and its live children."""
    fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
    total = sum(int(f) for f in fields[11:15]) / CLOCK_TICKS  # utime, stime, cutime, cstime
    for child in _children(postmaster):
        with contextlib.suppress(OSError, IndexError):  # a backend that exited meanwhile: in cutime
            total += proc_cpu_seconds(child)
    return total


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all cores, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])
    return total - idle, total


class WaitSampler:
    """Samples what the database's active backends are doing, every 50 ms, in a thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples = 0
        self.states: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> WaitSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        connection = psycopg2.connect(self.url)
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                while not self._stop.wait(WAIT_SAMPLE_SECONDS):
                    cursor.execute(
                        "SELECT state, wait_event_type, wait_event FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                        " AND backend_type = 'client backend'"
                    )
                    self.samples += 1
                    for state, kind, event in cursor.fetchall():
                        if state == "active":
                            self.states["running (CPU)" if kind is None else f"{kind}:{event}"] += 1
                        elif state == "idle in transaction":
                            self.states["idle in transaction"] += 1
        finally:
            connection.close()


# --------------------------------------------------------------------------- configurations and runs


@dataclass
class Run:
    rate: float  # durable results / s
    results: int
    wall: float
    server_cpu: list[float]  # CPU seconds of each server process over the run
    pg_cpu: float
    client_cpu: float
    busy: float  # share of the machine's cores busy over the run (0..1)
    ran_dry: bool
    late_start: float  # s from "go" to the first task at a client
    drain: float  # s from "stop" to the last result committed
    unsaved: int  # results the clients sent that were not committed within COMMIT_TIMEOUT
    waits: Counter[str] = field(default_factory=Counter)
    wait_samples: int = 0


@dataclass
class Config:
    name: str
    backend: str  # sqlite | postgres
    procs: int
    servers: list[Server] = field(default_factory=list)
    database: str = ""
    campaign: int = 0
    runs: list[Run] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return median(r.rate for r in self.runs)

    def count(self, tag: str) -> tuple[int, float | None]:
        sql = "SELECT COUNT(*), MAX(created) FROM result WHERE host = %s"
        if self.backend == "sqlite":
            return self.servers[0].query(sql.replace("%s", "?"), (tag,))[0]
        with psycopg2.connect(self.database) as connection, connection.cursor() as cursor:
            cursor.execute(sql, (tag,))
            return cursor.fetchone()  # type: ignore[return-value]

    def pending(self) -> int:
        sql = "SELECT COUNT(*) FROM dataset WHERE state = 'pending'"
        if self.backend == "sqlite":
            return self.servers[0].query(sql)[0][0]
        with psycopg2.connect(self.database) as connection, connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchone()[0]  # type: ignore[index]


def postmaster_pid() -> int:
    from tests import pg

    cluster = pg._cluster  # the cluster tests/pg.py started for this process
    assert cluster is not None
    return int((cluster.data / "postmaster.pid").read_text().split("\n", 1)[0])


def set_up(config: Config, datasets: int, settings: dict[str, Any]) -> None:
    from tests.support.pg import fresh_database

    server_settings = {"generator_low_water": 100_000_000, **settings}
    if config.backend == "postgres":
        config.database = fresh_database()
        for i in range(config.procs):
            server = Server(server_settings, database=config.database, email=f"bench{i}@example.org")
            config.servers.append(server.start())
    else:
        config.servers.append(Server(server_settings).start())
        config.database = config.servers[0].database
    created = config.servers[0].create_campaign(
        TRIVIAL_KERNEL, array_generator(datasets), name=f"scale-out {config.name}", task_timeout=3600
    )
    config.campaign = created["id"]
    config.servers[0].wait_status(config.campaign, ["running"], timeout=900)
    if config.procs > 1:
        time.sleep(2.5)  # the other processes learn of the campaign on their next refresh (every 2 s)


def one_run(config: Config, clients: int, workers: int, seconds: float, tag: str, postmaster: int) -> Run:
    servers = config.servers
    groups = [
        LoadGroup(LoadParams(servers[i % len(servers)].ws_url, config.campaign, "batch", slots=SLOTS, tag=tag), 1)
        for i in range(clients)
    ]
    try:
        share, extra = divmod(workers, clients)
        for i, group in enumerate(groups):
            group.connect(share + (1 if i < extra else 0))
        client_pids = [proc.pid for group in groups for proc in group.procs]
        cpu0 = [s.cpu_seconds() for s in servers]
        pg0 = cluster_cpu_seconds(postmaster) if config.backend == "postgres" else 0.0
        clients0 = sum(proc_cpu_seconds(pid) for pid in client_pids)
        busy0 = machine_busy()
        sampler = WaitSampler(config.database) if config.backend == "postgres" else None
        if sampler is not None:
            sampler.__enter__()
        go = time.time()
        for group in groups:
            group.go()
        time.sleep(seconds)
        stop = time.time()
        stats = merge_stats([group.stop() for group in groups])
        # The end of the run is when the last result the clients sent is committed: poll the count
        # (the rows' `created` is when their group commit began, which hides a slow commit).
        deadline = time.time() + COMMIT_TIMEOUT
        count, _ = config.count(tag)
        while count < stats.results_sent and time.time() < deadline:
            time.sleep(0.02)
            count, _ = config.count(tag)
        committed = time.time()
        if sampler is not None:
            sampler.__exit__()
        busy1 = machine_busy()
        cpu = [s.cpu_seconds() - c for s, c in zip(servers, cpu0, strict=True)]
        pg_cpu = cluster_cpu_seconds(postmaster) - pg0 if config.backend == "postgres" else 0.0
        client_cpu = sum(proc_cpu_seconds(pid) for pid in client_pids) - clients0
    finally:
        for group in groups:
            group.close()
    wall = (committed - stats.first_task) if count else float("nan")
    return Run(
        rate=count / wall if count else 0.0,
        results=count,
        wall=wall,
        server_cpu=cpu,
        pg_cpu=pg_cpu,
        client_cpu=client_cpu,
        busy=(busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]),
        ran_dry=stats.byes > 0,
        late_start=stats.first_task - go if stats.first_task else float("nan"),
        drain=committed - stop,
        unsaved=stats.results_sent - count,
        waits=sampler.states if sampler is not None else Counter(),
        wait_samples=sampler.samples if sampler is not None else 0,
    )


# --------------------------------------------------------------------------- the report


def _waits(config: Config) -> str:
    total: Counter[str] = Counter()
    samples = 0
    for run in config.runs:
        total.update(run.waits)
        samples += run.wait_samples
    if not samples:
        return ""
    top = ", ".join(f"{name} {count / samples:.2f}" for name, count in total.most_common(5))
    return top or "none active"


def report(configs: list[Config], args: argparse.Namespace, head: str, settings: dict[str, Any]) -> str:
    cores = os.cpu_count() or 1
    lines = ["## Scale-out\n", head]
    tuned = ", ".join(f"`DISTRIBUTE_{k.upper()}={v}`" for k, v in settings.items()) or "none (defaults)"
    lines.append(
        f"\nN `distribute serve` processes on one PostgreSQL database (a throwaway cluster from `tests/pg.py`: "
        f"fsync, synchronous_commit and full_page_writes off, shared_buffers 32 MB), SQLite with one process as "
        f"the baseline. Load: {args.clients} protocol-client processes (`loadclient`), {args.workers} connections "
        f"in all, batched frames of {SLOTS} slots answered at once; client process i connects to server i mod N, "
        f"as a TCP load balancer spreads connections. Durable results/s = result rows of the run / (the moment "
        f"the last result the clients sent is committed, polled every 20 ms - first task received). Each configuration has its own database, servers and one campaign "
        f"sized so that no run runs dry; {args.runs} runs of {args.seconds:g} s each, interleaved across the "
        f"configurations, each after an uncounted 1 s warm-up; medians. CPU is user + system time over the run "
        f"(PostgreSQL: the postmaster and all its children); *busy* is the share of the machine's {cores} cores "
        f"in use (everything, other workloads included). Server settings tuned: {tuned}.\n\n"
    )
    base = next((c for c in configs if c.backend == "postgres" and c.procs == 1), None)
    rows = []
    for c in configs:
        ratio = ""
        if base is not None and c.backend == "postgres" and c.procs > 1 and base.rate:
            value = c.rate / (c.procs * base.rate)
            scope = "" if c.procs <= cores else f" (beyond {cores} cores)"
            verdict = ("met" if value >= TARGET else "missed") if c.procs <= cores else "reported"
            ratio = f"**{value:.2f}** {verdict}{scope}"
        per_server = " + ".join(f"{median(r.server_cpu[i] / r.wall for r in c.runs):.0%}" for i in range(c.procs))
        rows.append(
            (
                c.name,
                f"**{fmt(c.rate)}**",
                " / ".join(fmt(r.rate) for r in c.runs),
                ratio,
                per_server,
                f"{median(r.pg_cpu / r.wall for r in c.runs):.0%}" if c.backend == "postgres" else "",
                f"{median(r.client_cpu / r.wall for r in c.runs):.0%}",
                f"{median(r.busy for r in c.runs):.0%}",
                f"{median(sum(r.server_cpu) / max(r.results, 1) * 1000 for r in c.runs):.3f}",
                f"{median(r.pg_cpu / max(r.results, 1) * 1000 for r in c.runs):.3f}" if c.backend == "postgres" else "",
                "yes" if any(r.ran_dry for r in c.runs) else "",
            )
        )
    lines.append(
        table(
            (
                "configuration",
                "median results/s",
                "runs",
                f"N-proc / (N x 1-proc), target >= {TARGET}",
                "server CPU (% of a core, each process)",
                "PostgreSQL CPU",
                "clients CPU",
                "machine busy",
                "server CPU s / 1000 results",
                "PostgreSQL CPU s / 1000 results",
                "ran dry",
            ),
            rows,
        )
    )
    waits = [(c.name, _waits(c)) for c in configs if c.backend == "postgres"]
    if any(w for _, w in waits):
        lines.append(
            "\nPostgreSQL backends of the database, sampled every 50 ms during the runs (mean number of backends "
            "in each state per sample; *running* = active, no wait event; `Lock:*`/`LWLock:*` = waiting): "
            + "; ".join(f"**{name}**: {w}" for name, w in waits)
            + ".\n"
        )
    lines.append(bounds(configs, cores))
    return "".join(lines)


def bounds(configs: list[Config], cores: int) -> str:
    """What limits scale-out here, from the measured CPU: the machine's cores are shared by everything."""
    pg = [c for c in configs if c.backend == "postgres" and c.runs]
    if not pg:
        return ""
    one = min(pg, key=lambda c: c.procs)
    server = median(sum(r.server_cpu) / max(r.results, 1) for r in one.runs)  # CPU s per result
    database = median(r.pg_cpu / max(r.results, 1) for r in one.runs)
    clients = median(r.client_cpu / max(r.results, 1) for r in one.runs)
    per_result = server + database + clients
    ceiling = cores / per_result if per_result else float("nan")
    text = (
        f"\n**What bounds it.** With {one.procs} process the machine is already "
        f"{median(r.busy for r in one.runs):.0%} busy: the server process uses "
        f"{median(sum(r.server_cpu) / r.wall for r in one.runs):.0%} of a core and PostgreSQL "
        f"{median(r.pg_cpu / r.wall for r in one.runs):.0%}. Each durable result costs {server * 1e6:.0f} µs of "
        f"server CPU, {database * 1e6:.0f} µs of PostgreSQL CPU and {clients * 1e6:.0f} µs in the clients, so "
        f"{cores} cores running nothing else could commit at most {fmt(ceiling)} results/s, whatever the number "
        f"of server processes ({fmt(ceiling / max(one.rate, 1), 1)}x the 1-process figure). "
    )
    for c in pg:
        if c is one:
            continue
        c_server = median(sum(r.server_cpu) / max(r.results, 1) for r in c.runs)
        c_db = median(r.pg_cpu / max(r.results, 1) for r in c.runs)
        text += (
            f"With {c.procs} processes: {c_server * 1e6:.0f} µs server + {c_db * 1e6:.0f} µs PostgreSQL CPU per "
            f"result. "
        )
    text += (
        "Extra server processes cannot add throughput while PostgreSQL, on the same cores, needs more CPU per "
        "result than the server itself; the target needs PostgreSQL on cores (or a machine) of its own, or less "
        "database work per result (see the notes below).\n"
    )
    return text + NOTES


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale_out", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="length of one run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--procs", default="1,2,4", help="server processes on PostgreSQL")
    parser.add_argument("--no-sqlite", action="store_true", help="skip the SQLite baseline")
    parser.add_argument("--clients", type=int, default=4, help="load-client processes")
    parser.add_argument("--workers", type=int, default=16, help="connections in all")
    parser.add_argument("--rate-guess", type=float, help="results/s to size every campaign for")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="a server setting (DISTRIBUTE_NAME)"
    )
    parser.add_argument("--no-write", action="store_true", help="print, do not touch BENCHMARKS.md")
    args = parser.parse_args(argv)
    settings = dict(item.split("=", 1) for item in args.env)
    configs = [] if args.no_sqlite else [Config("SQLite, 1 process", "sqlite", 1)]
    configs += [
        Config(f"PostgreSQL, {n} process{'es' if n > 1 else ''}", "postgres", n)
        for n in (int(p) for p in args.procs.split(","))
    ]
    head = preamble("benchmarks.scale_out", argv)  # the load average before anything starts
    from tests.support.pg import stop_cluster

    try:
        for config in configs:
            started = time.monotonic()
            rate = args.rate_guess or RATE_GUESS[config.backend]
            datasets = int(rate * (args.seconds + 1) * args.runs + rate * 2)  # + the warm-up
            set_up(config, datasets, settings)
            print(f"set up {config.name}: {datasets:,} datasets in {time.monotonic() - started:.0f} s", flush=True)
        postmaster = postmaster_pid() if any(c.backend == "postgres" for c in configs) else 0
        for config in configs:
            one_run(config, args.clients, args.workers, 1.0, f"{config.name}-warmup", postmaster)
        for k in range(args.runs):
            for config in configs:
                run = one_run(config, args.clients, args.workers, args.seconds, f"{config.name}-{k}", postmaster)
                config.runs.append(run)
                print(
                    f"  {config.name:26} run {k + 1}: {fmt(run.rate)} results/s ({run.results} in {run.wall:.2f} s; "
                    f"server CPU {' + '.join(f'{c:.2f}' for c in run.server_cpu)} s, PostgreSQL {run.pg_cpu:.2f} s, "
                    f"clients {run.client_cpu:.2f} s, busy {run.busy:.0%}; first task {run.late_start:.2f} s after go, "
                    f"all committed {run.drain:.2f} s after stop{f', {run.unsaved} NOT COMMITTED' if run.unsaved else ''})"
                    f"{' RAN DRY' if run.ran_dry else ''}{' waits ' + str(dict(run.waits.most_common(4))) if run.waits else ''}",
                    flush=True,
                )
        for config in configs:
            left = config.pending()
            print(f"{config.name}: {left:,} datasets still pending", flush=True)
    finally:
        # All at once: a server may take seconds to shut down (final commit, releasing its leases).
        stopping = [threading.Thread(target=s.cleanup) for c in configs for s in c.servers]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join()
        stop_cluster()
    text = report(configs, args, head, settings)
    print(text)
    if not args.no_write:
        write_section("scale-out", text)


if __name__ == "__main__":
    main()
