"""Every setting of distribute in one table: name, default, unit, help.

Values come, lowest precedence first, from the defaults below, a TOML settings file
(``--settings FILE`` or ``DISTRIBUTE_SETTINGS``), ``DISTRIBUTE_<NAME>`` environment variables
and finally explicit overrides (CLI flags). Everything is validated once, at startup, so a typo
fails before the server accepts a connection.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .errors import SettingsError

__all__ = ["SETTINGS", "Check", "Setting", "Settings", "load_settings", "settings_table"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    """What values a setting allows: the test, and how the error message describes it."""

    allowed: str
    test: Callable[[Any], bool]

    def __call__(self, value: Any) -> bool:
        return self.test(value)


def _between(low: float, high: float) -> Check:
    return Check(f"from {low} to {high}", lambda v: low <= v <= high)


def _one_of(*choices: Any) -> Check:
    return Check("one of " + ", ".join(map(str, choices)), lambda v: v in choices)


_any = Check("any value", lambda v: True)
_positive = Check("greater than 0", lambda v: v > 0)
_non_negative = Check("0 or more", lambda v: v >= 0)
# Any scheme: storage plugins register their own (docs/plugins.md); an unknown one fails at startup
# with the list of known schemes (plugins.storage_factory).
_database_url = Check(
    "a URL such as sqlite:///PATH or postgres://USER:PASS@HOST:PORT/DB",
    lambda v: re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", v) is not None,
)


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    unit: str
    help: str
    check: Check = _any


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "database",
        "sqlite:///distribute.db",
        "URL",
        "sqlite:///PATH or postgres://USER:PASS@HOST:PORT/DB",
        _database_url,
    ),
    Setting(
        "host",
        "127.0.0.1",
        "",
        "address the server listens on",
        # An empty host would listen on every interface: that must be asked for (0.0.0.0, ::).
        Check("not empty (0.0.0.0 listens on every interface)", lambda v: v.strip() != ""),
    ),
    Setting("port", 8000, "", "TCP port the server listens on (0 = any free port)", _between(0, 65535)),
    Setting(
        "public_url",
        "",
        "URL",
        "URL visitors reach the server at (default: http://HOST:PORT)",
        Check("empty or an http:// or https:// URL", lambda v: v == "" or v.startswith(("http://", "https://"))),
    ),
    Setting("scheduler", "round-robin", "name", "campaign scheduling policy for workers that accept any campaign"),
    Setting(
        "db_threads", 4, "threads", "most storage calls running at once (PostgreSQL connections per process)", _positive
    ),
    Setting("generator_timeout", 5.0, "s", "wall-clock limit of one generator run (or one lazy batch)", _positive),
    Setting("generator_heap", 256, "MiB", "V8 heap limit of the generator sandbox", _positive),
    Setting("generator_batch", 2000, "datasets", "datasets pulled from a lazy generator at a time", _positive),
    Setting(
        "generator_low_water", 20000, "datasets", "pull more from a lazy generator when fewer are waiting", _positive
    ),
    Setting("max_datasets", 10_000_000, "datasets", "most datasets one campaign may generate", _positive),
    Setting("max_dataset_bytes", 1024 * 1024, "bytes", "largest single dataset (msgpack)", _positive),
    Setting(
        "max_source_bytes", 4 * 1024 * 1024, "bytes", "largest kernel, generator or static dataset upload", _positive
    ),
    Setting("max_result_bytes", 1024 * 1024, "bytes", "largest single result (msgpack)", _positive),
    Setting("max_frame_bytes", 4 * 1024 * 1024, "bytes", "largest WebSocket frame a worker may send", _positive),
    Setting(
        "max_inflight_bytes",
        4 * 1024 * 1024,
        "bytes",
        "dataset bytes in flight to one connection, past which it gets no more tasks (one dataset may cross it)",
        _positive,
    ),
    Setting(
        "task_timeout",
        60.0,
        "s",
        "default per-task deadline; a task not answered by then is handed out again",
        _positive,
    ),
    Setting("max_task_errors", 3, "errors", "kernel errors on one dataset before it is marked failed", _positive),
    # Liveness and abuse limits (distribute/limits.py; docs/architecture.md "Limits").
    Setting(
        "heartbeat_timeout",
        120.0,
        "s",
        "a connection holding tasks that sends no frame for this long is closed and its tasks handed out again",
        _positive,
    ),
    Setting(
        "tcp_keepalive",
        60.0,
        "s",
        "idle time before TCP probes a silent peer (then every 10 s, 6 probes): a dead one is dropped; 0 = off",
        _non_negative,
    ),
    Setting(
        "ws_ping_interval",
        0.0,
        "s",
        "WebSocket ping to every connection this often, for proxies that close idle sockets (0 = never)",
        _non_negative,
    ),
    Setting("max_connections_per_ip", 20_000, "connections", "open worker connections from one address", _positive),
    Setting(
        "max_tasks_per_connection",
        256,
        "tasks",
        "most tasks one connection holds (caps `slots`)",
        _between(1, 256),
    ),
    Setting("max_tasks_per_ip", 100_000, "tasks", "most tasks the connections of one address hold together", _positive),
    Setting("max_frames_per_second", 10_000.0, "frames/s", "frames one connection may send (2 s burst)", _positive),
    Setting(
        "max_frames_per_second_per_ip",
        50_000.0,
        "frames/s",
        "frames the connections of one address may send",
        _positive,
    ),
    Setting(
        "max_bytes_per_second",
        16 * 1024 * 1024,
        "bytes/s",
        "bytes one connection may send (2 s burst, at least one max_frame_bytes frame)",
        _positive,
    ),
    Setting(
        "max_bytes_per_second_per_ip",
        64 * 1024 * 1024,
        "bytes/s",
        "bytes the connections of one address may send",
        _positive,
    ),
    Setting(
        "missed_task_memory",
        3600.0,
        "s",
        "how long tasks a worker let expire or dropped count against its address and client id",
        _positive,
    ),
    Setting(
        "lease_seconds",
        30.0,
        "s",
        "how long a server process holds datasets it took from storage (renewed while alive)",
        _positive,
    ),
    Setting(
        "refill_batch",
        512,
        "datasets",
        "datasets leased from storage into a campaign's in-memory queue at once",
        _positive,
    ),
    Setting(
        "refill_growth",
        8,
        "x refill_batch",
        "largest refill at high task rates (1: always refill_batch, for several processes sharing small campaigns)",
        _positive,
    ),
    Setting("flush_interval", 0.02, "s", "longest a received result waits for its group commit", _positive),
    Setting("flush_batch", 2000, "results", "results written in one transaction at most", _positive),
    # Result verification (docs/verification.md).
    Setting(
        "verify_max_copies",
        6,
        "results",
        "results of one replicated dataset without a quorum before it is marked a conflict",
        _positive,
    ),
    Setting(
        "verify_distinct_addresses",
        1,
        "",
        "1: copies of one dataset go to different IP addresses (not only identities); 0: identities only",
        _one_of(0, 1),
    ),
    Setting(
        "trust_threshold",
        20,
        "results",
        "agreeing results in a row before a worker gets unreplicated tasks at all (0: never)",
        _non_negative,
    ),
    Setting(
        "trust_ceiling",
        0.9,
        "",
        "highest share of a trusted worker's tasks handed out without replicas",
        Check("at least 0 and below 1", lambda v: 0 <= v < 1),
    ),
    Setting("spot_check_rate", 0.05, "", "share of tasks that come with a known-answer spot check", _between(0, 1)),
    Setting(
        "flush_interval_low_rate",
        0.2,
        "s",
        "longest a received result waits for its group commit while results trickle in (fewer commits)",
        _positive,
    ),
    # The console: accounts, their protection, and the mail that resets passwords.
    Setting("session_days", 14.0, "days", "how long a console sign-in lasts", _positive),
    Setting("reset_minutes", 60.0, "min", "how long an e-mailed password-reset link stays valid", _positive),
    Setting("rate_window", 900.0, "s", "window of the sign-in, reset and sign-up rate limits", _positive),
    Setting("signin_limit", 5, "attempts", "failed sign-ins per address or e-mail in the window", _positive),
    Setting("reset_limit", 3, "requests", "password-reset requests per address or e-mail in the window", _positive),
    Setting("signup_limit", 5, "accounts", "sign-ups from one address in the window", _positive),
    Setting(
        "signup_min_seconds",
        1.5,
        "s",
        "fewest seconds between showing the sign-up form and submitting it (bots are quicker)",
        _non_negative,
    ),
    Setting("smtp_host", "", "", "SMTP server for mail (empty: write each mail to mail_outbox and log it)"),
    Setting("smtp_port", 587, "", "SMTP port", _between(1, 65535)),
    Setting("smtp_security", "starttls", "", "starttls, tls (implicit) or none", _one_of("starttls", "tls", "none")),
    Setting("smtp_user", "", "", "SMTP user name (empty: no login)"),
    Setting("smtp_password", "", "", "SMTP password"),
    Setting(
        "mail_from",
        "distribute@localhost",
        "address",
        "sender of the mail the console sends",
        Check("an e-mail address (with an @)", lambda v: "@" in v),
    ),
    Setting("mail_outbox", "var/outbox", "path", "folder that receives mail when no SMTP server is set"),
)

_BY_NAME = {setting.name: setting for setting in SETTINGS}


@dataclass(frozen=True)
class Settings:
    database: str
    host: str
    port: int
    public_url: str
    scheduler: str
    db_threads: int
    generator_timeout: float
    generator_heap: int
    generator_batch: int
    generator_low_water: int
    max_datasets: int
    max_dataset_bytes: int
    max_source_bytes: int
    max_result_bytes: int
    max_frame_bytes: int
    max_inflight_bytes: int
    task_timeout: float
    max_task_errors: int
    heartbeat_timeout: float
    tcp_keepalive: float
    ws_ping_interval: float
    max_connections_per_ip: int
    max_tasks_per_connection: int
    max_tasks_per_ip: int
    max_frames_per_second: float
    max_frames_per_second_per_ip: float
    max_bytes_per_second: int
    max_bytes_per_second_per_ip: int
    missed_task_memory: float
    lease_seconds: float
    refill_batch: int
    refill_growth: int
    flush_interval: float
    flush_batch: int
    flush_interval_low_rate: float
    verify_max_copies: int
    verify_distinct_addresses: int
    trust_threshold: int
    trust_ceiling: float
    spot_check_rate: float
    session_days: float
    reset_minutes: float
    rate_window: float
    signin_limit: int
    reset_limit: int
    signup_limit: int
    signup_min_seconds: float
    smtp_host: str
    smtp_port: int
    smtp_security: str
    smtp_user: str
    smtp_password: str
    mail_from: str
    mail_outbox: str

    def replace(self, **changes: Any) -> Settings:
        return load_settings(overrides={**self.__dict__, **changes}, environ={})


def _coerce(setting: Setting, raw: Any, source: str) -> Any:
    kind = type(setting.default)
    try:
        if kind is int and isinstance(raw, str):
            value = int(raw.replace("_", ""))
        elif kind is float and isinstance(raw, (str, int)) and not isinstance(raw, bool):
            value = float(raw)
        elif kind is str:
            value = str(raw)
        else:
            value = raw
    except ValueError:
        raise SettingsError(f"{setting.name} from {source}: {raw!r} is not a valid {kind.__name__}") from None
    if type(value) is not kind:
        raise SettingsError(f"{setting.name} from {source}: expected {kind.__name__}, got {raw!r}")
    if kind is float and not math.isfinite(value):
        raise SettingsError(f"{setting.name} from {source}: {raw!r} is not a finite number")
    if not setting.check(value):
        raise SettingsError(
            f"{setting.name} from {source}: {raw!r} is out of range: it must be {setting.check.allowed} ({setting.help})"
        )
    return value


def _warn_about_typos(environ: Mapping[str, str]) -> None:
    """Log DISTRIBUTE_* variables that are no setting but look like one (a typo is ignored otherwise).

    Not an error: the prefix is shared with variables that are no settings (DISTRIBUTE_SETTINGS,
    the CLI's DISTRIBUTE_TOKEN and DISTRIBUTE_SERVER, plugins' own such as DISTRIBUTE_LOTTERY_SEED).
    """
    for key in sorted(environ):
        name = key.removeprefix("DISTRIBUTE_")
        if name == key or name == "SETTINGS" or (name.isupper() and name.lower() in _BY_NAME):
            continue
        close = difflib.get_close_matches(name.lower(), _BY_NAME, n=1, cutoff=0.8)
        if close:
            log.warning("%s is not a setting and is ignored; did you mean DISTRIBUTE_%s?", key, close[0].upper())


def load_settings(
    file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge defaults, file, environment and overrides; raise SettingsError on any bad value."""
    environ = os.environ if environ is None else environ
    values = {setting.name: setting.default for setting in SETTINGS}
    file = file or environ.get("DISTRIBUTE_SETTINGS")
    if file:
        try:
            data = tomllib.loads(Path(file).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"cannot read settings file {file}: {exc}") from None
        for name, raw in data.items():
            if name not in _BY_NAME:
                raise SettingsError(f"unknown setting {name!r} in {file}; known: {', '.join(_BY_NAME)}")
            values[name] = _coerce(_BY_NAME[name], raw, str(file))
    _warn_about_typos(environ)
    for setting in SETTINGS:
        key = "DISTRIBUTE_" + setting.name.upper()
        if key in environ:
            values[setting.name] = _coerce(setting, environ[key], key)
    for name, raw in (overrides or {}).items():
        if raw is None:
            continue
        if name not in _BY_NAME:
            raise SettingsError(f"unknown setting {name!r}")
        values[name] = _coerce(_BY_NAME[name], raw, "command line")
    assert {f.name for f in fields(Settings)} == set(_BY_NAME)
    return Settings(**values)


def settings_table() -> str:
    """The settings as a Markdown table (docs/settings.md is generated from this)."""
    rows = ["| name | default | unit | meaning |", "|---|---|---|---|"]
    rows += [f"| `{s.name}` | `{s.default}` | {s.unit} | {s.help} |" for s in SETTINGS]
    return "\n".join(rows)
