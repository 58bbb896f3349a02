"""Every setting of distribute, declared once: the `Settings` dataclass, one field per setting.

Each field carries its default, unit, help and allowed values (`setting(...)`); the table of
settings (`SETTINGS`, `settings_table()`, docs/settings.md), the ``DISTRIBUTE_<NAME>`` environment
variables, the keys of the settings file and validation are all derived from those fields.

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
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from .errors import SettingsError
from .setting_fields import (
    ANY_VALUE,
    DATABASE_URL,
    NON_NEGATIVE,
    POSITIVE,
    Check,
    between,
    is_proxy_list,
    one_of,
    setting,
)

__all__ = ["SETTINGS", "Check", "Setting", "Settings", "load_settings", "setting", "settings_table"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every setting's value. The field order is the order of the table and of docs/settings.md."""

    database: str = setting(
        "sqlite:///distribute.db", "URL", "sqlite:///PATH or postgres://USER:PASS@HOST:PORT/DB", DATABASE_URL
    )
    # An empty host would listen on every interface: that must be asked for (0.0.0.0, ::).
    host: str = setting(
        "127.0.0.1",
        "",
        "address the server listens on",
        Check("not empty (0.0.0.0 listens on every interface)", lambda v: v.strip() != ""),
    )
    port: int = setting(8000, "", "TCP port the server listens on (0 = any free port)", between(0, 65535))
    public_url: str = setting(
        "",
        "URL",
        "URL visitors reach the server at (default: http://HOST:PORT)",
        Check("empty or an http:// or https:// URL", lambda v: v == "" or v.startswith(("http://", "https://"))),
    )
    scheduler: str = setting("round-robin", "name", "campaign scheduling policy for workers that accept any campaign")
    reschedule_seconds: float = setting(
        10.0,
        "s",
        "how often the scheduler re-places a worker that accepts any campaign (each worker's period is staggered by up to half of this either way)",
        POSITIVE,
    )
    metrics_token: str = setting(
        "",
        "",
        "bearer token a scraper must send for /-/metrics (empty: the metrics are public; docs/security.md says what they show)",
    )
    db_threads: int = setting(
        4, "threads", "most storage calls running at once (PostgreSQL connections per process)", POSITIVE
    )
    generator_timeout: float = setting(5.0, "s", "wall-clock limit of one generator run (or one lazy batch)", POSITIVE)
    generator_heap: int = setting(256, "MiB", "V8 heap limit of the generator sandbox", POSITIVE)
    generator_batch: int = setting(2000, "datasets", "datasets pulled from a lazy generator at a time", POSITIVE)
    generator_low_water: int = setting(
        20000, "datasets", "pull more from a lazy generator when fewer are waiting", POSITIVE
    )
    sandbox_max_children: int = setting(
        8,
        "processes",
        "JavaScript sandbox processes alive at once (jobs beyond wait; lazy generators may take all but a quarter)",
        Check("2 or more", lambda v: v >= 2),
    )
    sandbox_jitless: int = setting(
        1,
        "",
        "1: the server's JavaScript sandbox runs V8 without its JIT compilers (smaller attack surface, no WebAssembly); 0: with",
        one_of(0, 1),
    )
    check_datasets: int = setting(
        3,
        "datasets",
        "datasets a new campaign's kernel is tried on in the server's sandbox before it is accepted (0: no trial)",
        Check("0 or more", lambda v: v >= 0),
    )
    check_seconds: float = setting(
        10.0, "s", "wall-clock limit of that trial's kernel part (the generator has generator_timeout)", POSITIVE
    )
    max_datasets: int = setting(10_000_000, "datasets", "most datasets one campaign may generate", POSITIVE)
    max_dataset_bytes: int = setting(1024 * 1024, "bytes", "largest single dataset (msgpack)", POSITIVE)
    max_source_bytes: int = setting(
        4 * 1024 * 1024, "bytes", "largest kernel, generator or static dataset upload", POSITIVE
    )
    max_result_bytes: int = setting(1024 * 1024, "bytes", "largest single result (msgpack)", POSITIVE)
    max_upload_batch_bytes: int = setting(
        16 * 1024 * 1024,
        "bytes",
        "largest body of one batch of datasets sent to an open campaign (a body is also within 5 x max_source_bytes)",
        POSITIVE,
    )
    max_upload_batch: int = setting(10_000, "datasets", "most datasets in one batch sent to an open campaign", POSITIVE)
    open_backlog: int = setting(
        100_000,
        "datasets",
        "an open campaign takes no more datasets (429, Retry-After) while more than this many wait unanswered",
        POSITIVE,
    )
    quota_campaigns: int = setting(
        1000,
        "campaigns",
        "most campaigns one account may have, deleted ones too (0 = no limit); far above what one team runs",
        NON_NEGATIVE,
    )
    quota_datasets: int = setting(
        100_000_000,
        "datasets",
        "most datasets one account's campaigns may generate in all (0 = no limit); ten full max_datasets campaigns",
        NON_NEGATIVE,
    )
    quota_result_bytes: int = setting(
        100 * 1024**3,
        "bytes",
        "result bytes one account may store before it may create no more campaigns (0 = no limit); 100 GiB",
        NON_NEGATIVE,
    )
    quota_generators: int = setting(
        16,
        "campaigns",
        "campaigns of one account generating at once (0 = no limit); more would crowd out others' generators",
        NON_NEGATIVE,
    )
    quota_checks_per_hour: int = setting(
        120,
        "trials",
        "trial runs of new campaigns one account may start per hour in this process, refused ones too (0 = no limit)",
        NON_NEGATIVE,
    )
    event_streams_per_user: int = setting(
        8,
        "streams",
        "event streams (GET /api/campaigns/ID/events) one account may hold open in this process (0 = no limit)",
        NON_NEGATIVE,
    )
    max_frame_bytes: int = setting(4 * 1024 * 1024, "bytes", "largest WebSocket frame a worker may send", POSITIVE)
    max_inflight_bytes: int = setting(
        4 * 1024 * 1024,
        "bytes",
        "dataset bytes in flight to one connection, past which it gets no more tasks (one dataset may cross it)",
        POSITIVE,
    )
    task_timeout: float = setting(
        60.0, "s", "default per-task deadline; a task not answered by then is handed out again", POSITIVE
    )
    max_task_errors: int = setting(3, "errors", "kernel errors on one dataset before it is marked failed", POSITIVE)
    checkpoint_max_bytes: int = setting(
        64 * 1024,
        "bytes",
        "largest state a kernel may checkpoint with ctx.checkpoint (msgpack; at most 16 MiB); a larger one is refused",
        between(1, 16 * 1024 * 1024),
    )
    checkpoint_interval: float = setting(
        10.0,
        "s",
        "workers send at most one checkpoint per task this often (a newer one replaces the one waiting)",
        POSITIVE,
    )
    # Auto-pause (distribute/work/early.py): a broken kernel stops after a handful of tasks, not thousands.
    pause_after_failures: int = setting(
        20,
        "tasks",
        "a campaign's first this many task outcomes (results and kernel errors) are watched: if too many of them"
        " failed it pauses itself; 0 turns auto-pause off",
        NON_NEGATIVE,
    )
    pause_failure_ratio: float = setting(
        0.9,
        "",
        "the share of those first task outcomes that must be kernel errors to pause the campaign",
        Check("above 0 and at most 1", lambda v: 0 < v <= 1),
    )
    # Liveness and abuse limits (distribute/limits.py; docs/architecture.md "Limits").
    heartbeat_timeout: float = setting(
        120.0,
        "s",
        "a connection holding tasks that sends no frame for this long is closed and its tasks handed out again",
        POSITIVE,
    )
    tcp_keepalive: float = setting(
        60.0,
        "s",
        "idle time before TCP probes a silent peer (then every 10 s, 6 probes): a dead one is dropped; 0 = off",
        NON_NEGATIVE,
    )
    ws_ping_interval: float = setting(
        0.0,
        "s",
        "WebSocket ping to every connection this often, for proxies that close idle sockets (0 = never)",
        NON_NEGATIVE,
    )
    allowed_ws_origins: str = setting(
        "",
        "origins",
        "comma-separated web origins (https://host[:port]) besides the server's own whose pages may open /ws",
        Check(
            "empty or comma-separated http:// or https:// origins",
            lambda v: all(re.fullmatch(r"https?://[^/?#\s]+/?", o.strip()) for o in v.split(",") if o.strip()),
        ),
    )
    site_check_private: int = setting(
        0,
        "",
        "1: proving control of a site may fetch from private, loopback and link-local addresses (tests, intranets); "
        "0: such origins are refused",
        one_of(0, 1),
    )
    site_check_timeout: float = setting(5.0, "s", "time limit of one fetch that proves control of a site", POSITIVE)
    site_check_max_bytes: int = setting(
        65536, "bytes", "most bytes read of a site's proof of control (the file or the home page)", POSITIVE
    )
    site_ticket_seconds: float = setting(
        6 * 3600.0, "s", "lifetime of the site ticket a broker page of a verified site hands its harness", POSITIVE
    )
    forwarded_allow_ips: str = setting(
        "",
        "addresses",
        "comma-separated addresses or CIDR networks of the reverse proxies whose forwarding headers name the "
        'client (empty: the socket\'s peer is the client); "*" trusts every peer, which lets anyone forge '
        "its address",
        Check('empty, "*", or comma-separated IP addresses or CIDR networks', is_proxy_list),
    )
    forwarded_header: str = setting(
        "x-forwarded-for",
        "",
        "what the trusted proxies write: x-forwarded-for (with X-Forwarded-Proto) or forwarded (RFC 7239)",
        one_of("x-forwarded-for", "forwarded"),
    )
    max_connections_per_ip: int = setting(
        64,
        "connections",
        "open worker connections from one address (an IPv6 address counts as its /64); raise it for a large NAT "
        "or a campus (each browser tab with the harness is one connection; a proxy in front: forwarded_allow_ips)",
        POSITIVE,
    )
    max_connections: int = setting(
        0,
        "connections",
        "open worker connections in all (0 = the open-files limit, raised to its hard limit at start, less a tenth "
        "and at least 256 kept for the rest; a higher value is lowered to that)",
        NON_NEGATIVE,
    )
    max_hello_bytes: int = setting(
        4096, "bytes", "largest `hello` frame (a larger one is closed with 1009)", between(256, 1024 * 1024)
    )
    max_tasks_per_connection: int = setting(
        256, "tasks", "most tasks one connection holds (caps `slots`)", between(1, 256)
    )
    max_tasks_per_ip: int = setting(
        100_000, "tasks", "most tasks the connections of one address hold together", POSITIVE
    )
    max_frames_per_second: float = setting(10_000.0, "frames/s", "frames one connection may send (2 s burst)", POSITIVE)
    max_frames_per_second_per_ip: float = setting(
        50_000.0, "frames/s", "frames the connections of one address may send", POSITIVE
    )
    max_bytes_per_second: int = setting(
        16 * 1024 * 1024,
        "bytes/s",
        "bytes one connection may send (2 s burst, at least one max_frame_bytes frame)",
        POSITIVE,
    )
    max_bytes_per_second_per_ip: int = setting(
        64 * 1024 * 1024, "bytes/s", "bytes the connections of one address may send", POSITIVE
    )
    missed_task_memory: float = setting(
        3600.0, "s", "how long tasks a worker let expire or dropped count against its address and client id", POSITIVE
    )
    dwell_min_samples: int = setting(
        20,
        "observations",
        "answered tasks of a campaign and ended browser visits needed before they size browsers' prefetch and advise",
        POSITIVE,
    )
    lease_seconds: float = setting(
        30.0, "s", "how long a server process holds datasets it took from storage (renewed while alive)", POSITIVE
    )
    refill_batch: int = setting(
        512, "datasets", "datasets leased from storage into a campaign's in-memory queue at once", POSITIVE
    )
    refill_growth: int = setting(
        8,
        "x refill_batch",
        "largest refill at high task rates (1: always refill_batch, for several processes sharing small campaigns)",
        POSITIVE,
    )
    flush_interval: float = setting(0.02, "s", "longest a received result waits for its group commit", POSITIVE)
    flush_batch: int = setting(2000, "results", "results written in one transaction at most", POSITIVE)
    # Result verification (docs/verification.md).
    verify_max_copies: int = setting(
        6, "results", "results of one replicated dataset without a quorum before it is marked a conflict", POSITIVE
    )
    verify_distinct_addresses: int = setting(
        1,
        "",
        "1: copies of one dataset go to different IP addresses (not only identities); 0: identities only",
        one_of(0, 1),
    )
    trust_threshold: int = setting(
        20,
        "results",
        "agreeing results in a row before a worker gets unreplicated tasks at all (0: never)",
        NON_NEGATIVE,
    )
    trust_ceiling: float = setting(
        0.9,
        "",
        "highest share of a trusted worker's tasks handed out without replicas",
        Check("at least 0 and below 1", lambda v: 0 <= v < 1),
    )
    spot_check_rate: float = setting(0.05, "", "share of tasks that come with a known-answer spot check", between(0, 1))
    flush_interval_low_rate: float = setting(
        0.2,
        "s",
        "longest a received result waits for its group commit while results trickle in (fewer commits)",
        POSITIVE,
    )
    # The console: accounts, their protection, and the mail that resets passwords.
    session_days: float = setting(14.0, "days", "how long a console sign-in lasts", POSITIVE)
    reset_minutes: float = setting(60.0, "min", "how long an e-mailed password-reset link stays valid", POSITIVE)
    rate_window: float = setting(900.0, "s", "window of the sign-in, reset and sign-up rate limits", POSITIVE)
    signin_limit: int = setting(5, "attempts", "failed sign-ins per address or e-mail in the window", POSITIVE)
    reset_limit: int = setting(3, "requests", "password-reset requests per address or e-mail in the window", POSITIVE)
    signup_limit: int = setting(5, "accounts", "sign-ups from one address in the window", POSITIVE)
    credit_limit: int = setting(300, "requests", "credit lookups (consent card) per address in the window", POSITIVE)
    signup_min_seconds: float = setting(
        1.5, "s", "fewest seconds between showing the sign-up form and submitting it (bots are quicker)", NON_NEGATIVE
    )
    email_verification: str = setting(
        "auto",
        "",
        "whether a new console account must verify its e-mail address before it creates campaigns: "
        "on, off, or auto (on when smtp_host is set)",
        one_of("auto", "on", "off"),
    )
    campaign_review: str = setting(
        "required",
        "",
        "required: a new campaign of a non-admin reaches workers that ask for any campaign only once an admin "
        "approves it (workers that name it get it meanwhile); off: every new campaign is approved at once",
        one_of("required", "off"),
    )
    verify_hours: float = setting(48.0, "h", "how long an e-mailed address-verification link stays valid", POSITIVE)
    smtp_host: str = setting("", "", "SMTP server for mail (empty: write each mail to mail_outbox and log it)")
    smtp_port: int = setting(587, "", "SMTP port", between(1, 65535))
    smtp_security: str = setting("starttls", "", "starttls, tls (implicit) or none", one_of("starttls", "tls", "none"))
    smtp_user: str = setting("", "", "SMTP user name (empty: no login)")
    smtp_password: str = setting("", "", "SMTP password")
    mail_from: str = setting(
        "distribute@localhost",
        "address",
        "sender of the mail the console sends",
        Check("an e-mail address (with an @)", lambda v: "@" in v),
    )
    mail_outbox: str = setting("var/outbox", "path", "folder that receives mail when no SMTP server is set")
    # Logs (distribute/logs.py): what `distribute serve` writes to stderr.
    log_format: str = setting(
        "text",
        "",
        "text: a line per event for people; json: one JSON object per line (time, level, logger, message, "
        "request_id or connection_id) plus a JSON access log of every HTTP request",
        one_of("text", "json"),
    )
    log_level: str = setting("info", "", "least severe level written", one_of("debug", "info", "warning", "error"))

    def replace(self, **changes: Any) -> Settings:
        return load_settings(overrides={**self.__dict__, **changes}, environ={})

    @property
    def verifies_email(self) -> bool:
        """Must new console accounts verify their e-mail address ("auto": when mail really goes out)?"""
        return self.email_verification == "on" or (self.email_verification == "auto" and bool(self.smtp_host))


@dataclass(frozen=True)
class Setting:
    """One row of the settings table, derived from a field of `Settings`."""

    name: str
    default: Any
    unit: str
    help: str
    check: Check = ANY_VALUE


SETTINGS: tuple[Setting, ...] = tuple(
    Setting(f.name, f.default, f.metadata["unit"], f.metadata["help"], f.metadata["check"]) for f in fields(Settings)
)
_BY_NAME = {s.name: s for s in SETTINGS}


def _coerce(setting: Setting, raw: Any, source: str) -> Any:
    kind = type(setting.default)
    value: Any  # raw comes from TOML, the environment or the command line: anything until checked
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
    for declared in SETTINGS:
        key = "DISTRIBUTE_" + declared.name.upper()
        if key in environ:
            values[declared.name] = _coerce(declared, environ[key], key)
    for name, raw in (overrides or {}).items():
        if raw is None:
            continue
        if name not in _BY_NAME:
            raise SettingsError(f"unknown setting {name!r}")
        values[name] = _coerce(_BY_NAME[name], raw, "command line")
    return Settings(**values)


def settings_table() -> str:
    """The settings as a Markdown table (docs/settings.md is generated from this)."""
    rows = ["| name | default | unit | meaning |", "|---|---|---|---|"]
    rows += [f"| `{s.name}` | `{s.default}` | {s.unit} | {s.help} |" for s in SETTINGS]
    return "\n".join(rows)
