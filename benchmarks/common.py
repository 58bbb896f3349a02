"""Shared plumbing of the benchmarks: the machine, BENCHMARKS.md sections, the server under test.

- `machine()` names the machine (cores and CPU model from /proc/cpuinfo);
- `write_section()` replaces one benchmark's section of BENCHMARKS.md (and leaves the others);
- `Server` runs ``python -m distribute serve --port 0`` as a subprocess on a fresh SQLite database,
  with an API token, and reads its CPU time and RSS from /proc.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import shlex
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

__all__ = [
    "BENCHMARKS_MD",
    "PYTHON",
    "ROOT",
    "Server",
    "command",
    "fmt",
    "machine",
    "median",
    "preamble",
    "table",
    "write_section",
]

ROOT = Path(__file__).resolve().parent.parent
# The distribute source tree the server under test runs from (default: this checkout). Point it at a
# copy to benchmark a fixed snapshot while the checkout changes, or to compare two versions.
SOURCE = Path(os.environ.get("BENCH_SOURCE", ROOT)).resolve()
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
PYTHON = sys.executable
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# A trivial kernel for campaigns whose tasks are answered by protocol clients (no JavaScript runs).
TRIVIAL_KERNEL = "(function() { function main(d) { return d.i; } return { main: main }; })()"


def array_generator(n: int) -> str:
    """A generator whose main() returns an array of n tiny datasets {i: k}."""
    return (
        f"(function() {{ function main() {{ var a = new Array({n}); for (var i = 0; i < {n}; i++) a[i] = {{i: i}};"
        " return a; } return { main: main }; })()"
    )


def lazy_generator(n: int) -> str:
    """A generator function (pulled lazily, a batch at a time) yielding n tiny datasets {i: k}."""
    return f"(function() {{ function* main() {{ for (var i = 0; i < {n}; i++) yield {{i: i}}; }} return {{ main: main }}; }})()"


# --------------------------------------------------------------------------- the machine and the report


def machine() -> str:
    """'2 cores, AMD EPYC (Linux 6.1, Python 3.11.2)' from /proc/cpuinfo."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = os.cpu_count() or 0
    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f", {int(line.split()[1]) / 1024 / 1024:.0f} GiB RAM"
                break
    except OSError:
        pass
    return f"{cores} cores, {model}{memory} (Linux {platform.release()}, Python {platform.python_version()})"


def command(module: str, argv: Sequence[str] | None = None) -> str:
    """The exact command that produced a section, as one would type it in the repository root."""
    args = list(sys.argv[1:] if argv is None else argv)
    env = [f"BENCH_SOURCE={shlex.quote(os.environ['BENCH_SOURCE'])}"] if os.environ.get("BENCH_SOURCE") else []
    return " ".join([*env, ".venv/bin/python", "-m", module, *map(shlex.quote, args)])


def preamble(module: str, argv: Sequence[str] | None = None) -> str:
    today = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return f"*{today} · {machine()} · load average {load_average()} at the start · `{command(module, argv)}`*\n"


def median(values: Iterable[float]) -> float:
    data = list(values)
    return statistics.median(data) if data else float("nan")


def fmt(value: float, digits: int = 0) -> str:
    """12345.6 -> '12,346'; keeps NaN readable."""
    if value != value:  # NaN
        return "n/a"
    return f"{value:,.{digits}f}"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


_HEADER = """# Benchmarks

How fast distribute does what it exists for, measured against the performance targets of 0.1.0. Every section below is written by one module of
`benchmarks/` and replaced when that module runs again; `make bench` (`python -m benchmarks`) runs them
all. The server under test is always a separate process (`python -m distribute serve`, SQLite), the load
generators are other processes (`benchmarks/loadclient.py`, a minimal WebSocket client speaking
protocol v1), and all traffic stays on 127.0.0.1, so on a 2-core machine server and load share the two
cores. Figures are medians of at least three runs; each section names its date, machine and command.
"""

# Sections in the order they appear; hand-written ones (e.g. "hot-path") are kept as they are.
SECTION_ORDER = (
    "summary",
    "throughput",
    "floor",
    "connections",
    "generation",
    "client",
    "server-cost",
    "browser-overhead",
    "soak",
    "scale-out",
    "hot-path",
    "ab-storage-fix",
    "ab-adaptive-refill",
    "ab-event-driven-wakeups",
    "ab-per-result-work",
    "ab-bounded-count-and-arrays",
    "ab-count-only-near-low-water",
    "ab-low-rate-commits",
    "ab-gc-policy",
    "ab-package-layout",
    "whats-left",
    "jitless",
)
_SECTION = re.compile(r"<!-- begin (?P<name>[\w-]+) -->\n(?P<body>.*?)<!-- end (?P=name) -->\n", re.S)
_LOCK = threading.Lock()


def read_sections(path: Path = BENCHMARKS_MD) -> dict[str, str]:
    text = path.read_text() if path.exists() else ""
    return {m["name"]: m["body"] for m in _SECTION.finditer(text)}


def write_section(name: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or add) the section `name` of BENCHMARKS.md; every other section stays as it was."""
    with _LOCK:
        sections = read_sections(path)
        sections[name] = body if body.endswith("\n") else body + "\n"
        order = [n for n in SECTION_ORDER if n in sections] + [n for n in sections if n not in SECTION_ORDER]
        parts = [_HEADER]
        for section in order:
            parts.append(f"\n<!-- begin {section} -->\n{sections[section]}<!-- end {section} -->\n")
        path.write_text("".join(parts))
    print(f"wrote section '{name}' of {path.relative_to(ROOT)}", flush=True)


# --------------------------------------------------------------------------- the server under test


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the benchmark process dies (no orphaned servers)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def load_average() -> str:
    """The 1-minute load average: other work on the machine skews every figure, so it is recorded."""
    return f"{os.getloadavg()[0]:.2f}"


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14 and 15)


def proc_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Server:
    """``python -m distribute serve`` on a fresh SQLite database in a temporary folder.

    `settings` become DISTRIBUTE_* environment variables of the server process. Use as a context
    manager; the server is stopped with SIGINT (clean shutdown, final group commit) on exit.
    """

    def __init__(
        self,
        settings: dict[str, Any] | None = None,
        *,
        workdir: Path | None = None,
        wrapper: Sequence[str] = (),
        database: str | None = None,
        email: str = "bench@example.org",
    ) -> None:
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="distribute-bench-")
        self.workdir = workdir or Path(self._tmp.name)  # type: ignore[union-attr]
        self.db_path = self.workdir / "bench.db"
        # Another database (e.g. PostgreSQL, shared by several servers: give each its own `email`,
        # the account `distribute user create` makes for its API token); `query` reads SQLite only.
        self.database = database or f"sqlite:///{self.db_path}"
        self.email = email
        # Load generators open thousands of connections from 127.0.0.1, far past the per-address cap
        # a public server wants; a benchmark's own `settings` may still set it.
        # Benchmark campaigns come from a plain account and are served to workers that ask for any.
        self.settings = {"max_connections_per_ip": 1_000_000, "campaign_review": "off", **(settings or {})}
        self.wrapper = list(wrapper)  # e.g. ["-m", "cProfile", "-o", "FILE"]: inserted before "-m distribute serve"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.token = ""
        self.log_path = self.workdir / "server.log"
        self._http: httpx.Client | None = None

    # -- lifecycle

    def start(self, timeout: float = 60.0) -> Server:
        env = dict(os.environ)
        env.update({f"DISTRIBUTE_{k.upper()}": str(v) for k, v in self.settings.items()})
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SOURCE), env.get("PYTHONPATH")) if p)
        created = subprocess.run(
            [PYTHON, "-m", "distribute", "user", "create", self.email, "--database", self.database],
            env=env,
            cwd=SOURCE,
            capture_output=True,
            text=True,
            check=True,
        )
        self.token = created.stdout.split()[-1]
        log = open(self.log_path, "wb")  # noqa: SIM115 (closed when the server stops)
        self.process = subprocess.Popen(
            [PYTHON, *self.wrapper, "-m", "distribute", "serve", "--port", "0", "--database", self.database],
            env=env,
            cwd=SOURCE,
            stdout=subprocess.PIPE,
            stderr=log,
            preexec_fn=_die_with_parent,
        )
        log.close()
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while b"serving on" not in line:
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(
                    f"the server did not start; see {self.log_path}:\n{self.log_path.read_text()[-3000:]}"
                )
            line = self.process.stdout.readline()
        self.url = re.search(rb"https?://[\w.:\[\]]+", line).group(0).decode()  # type: ignore[union-attr]
        threading.Thread(target=self._drain, args=(self.process.stdout,), daemon=True).start()
        self._http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=120)
        return self

    @staticmethod
    def _drain(stream: Any) -> None:
        for _ in iter(stream.readline, b""):
            pass

    def stop(self, timeout: float = 20.0) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def cleanup(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.cleanup()

    # -- what a benchmark reads

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def rss_bytes(self) -> int:
        return proc_rss_bytes(self.pid)

    @property
    def http(self) -> httpx.Client:
        assert self._http is not None, "start the server first"
        return self._http

    def create_campaign(self, kernel: str, generator: str, static: str = "", **fields: Any) -> dict[str, Any]:
        files = {"kernel": ("kernel.js", kernel.encode()), "generator": ("generator.js", generator.encode())}
        if static:
            files["static_dataset"] = ("static.txt", static.encode())
        response = self.http.post("/api/campaigns", files=files, data={k: str(v) for k, v in fields.items()})
        if response.status_code != 201:
            raise RuntimeError(f"creating a campaign failed: {response.status_code} {response.text}")
        return response.json()

    def campaign(self, campaign_id: int) -> dict[str, Any]:
        response = self.http.get(f"/api/campaigns/{campaign_id}")
        response.raise_for_status()
        return response.json()

    def wait_status(self, campaign_id: int, statuses: Iterable[str], timeout: float = 300.0) -> dict[str, Any]:
        wanted = set(statuses)
        deadline = time.monotonic() + timeout
        while True:
            campaign = self.campaign(campaign_id)
            if campaign["status"] in wanted:
                return campaign
            if campaign["status"] == "failed":
                raise RuntimeError(f"campaign {campaign_id} failed: {campaign['generation_error']}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"campaign {campaign_id} still {campaign['status']} after {timeout} s")
            time.sleep(0.05)

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Read the server's database directly (SQLite, read-only; WAL lets it run beside the server)."""
        connection = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
        try:
            return connection.execute(sql, tuple(args)).fetchall()
        finally:
            connection.close()
