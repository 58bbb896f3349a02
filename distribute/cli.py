"""The `distribute` command line (also `python -m distribute`).

Server-side commands (`serve`, `user`) open the database themselves (`--database` or
DISTRIBUTE_DATABASE); client commands (`campaign`, `results`) talk to a running server's JSON API
(`--server`/DISTRIBUTE_SERVER, `--token`/DISTRIBUTE_TOKEN); `worker` is a headless worker.
Every command prints its main output (an id, a token) as the last word of its last line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import trio
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from .cli_users import create_user, grant_admin
from .errors import DistributeError, SettingsError
from .settings import load_settings, settings_table

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distribute", description="Volunteer computing in web browsers.")
    parser.add_argument("--settings", help="TOML settings file (also DISTRIBUTE_SETTINGS)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--database", help="sqlite:///PATH or postgres://… (also DISTRIBUTE_DATABASE)")
    serve.add_argument("--scheduler", help="round-robin, priority, compute-time or a plugin's name")

    user = commands.add_parser("user", help="manage accounts (server side)").add_subparsers(
        dest="action", required=True
    )
    new_user = user.add_parser("create", help="create a user and print an API token")
    new_user.add_argument("email")
    new_user.add_argument("--password-stdin", action="store_true", help="read a console password from stdin")
    new_user.add_argument("--database")
    new_user.add_argument("--admin", action="store_true", help="an admin: reviews campaigns, sees the admin pages")
    grant = user.add_parser("grant-admin", help="make an existing user an admin")
    grant.add_argument("email")
    grant.add_argument("--database")

    campaign = commands.add_parser("campaign", help="manage campaigns").add_subparsers(dest="action", required=True)
    create = campaign.add_parser("create", help="upload a campaign; prints its id")
    create.add_argument("--kernel", required=True, type=Path)
    create.add_argument("--generator", type=Path, help="JS file (required unless --open)")
    create.add_argument("--open", action="store_true", help="an open campaign: no generator, add datasets later")
    create.add_argument("--static", type=Path)
    create.add_argument("--name", default="")
    create.add_argument("--description", default="")
    create.add_argument("--priority", type=int, default=0)
    create.add_argument("--weight", type=float, default=1.0)
    create.add_argument("--replication", type=int, default=1)
    create.add_argument("--comparator", type=Path, help="JS file: compare(a, b) -> bool for replicas' results")
    create.add_argument("--spot-checks", type=Path, help='JSON file: [{"dataset": ..., "result": ...}, ...]')
    create.add_argument("--task-timeout", type=float)
    create.add_argument(
        "--skip-check",
        action="store_true",
        help="no trial run in the server's sandbox before the campaign goes live (a kernel needing browser-only APIs)",
    )
    update = campaign.add_parser("update", help="a new kernel version (N+1) for a campaign; prints the version")
    update.add_argument("id", type=int)
    update.add_argument("--kernel", required=True, type=Path)
    update.add_argument("--static", type=Path, help="a new static dataset (default: the current one is kept)")
    update.add_argument("--recompute", action="store_true", help="compute the datasets done under older versions again")
    update.add_argument("--skip-check", action="store_true", help="no trial run on the campaign's stored datasets")
    for name in ("show", "reset", "delete", "resume", "pause", "cancel", "close"):
        sub = campaign.add_parser(name, help=f"{name} a campaign")
        sub.add_argument("id", type=int)
    campaign.add_parser("approve", help="approve a campaign (admins)").add_argument("id", type=int)
    reject = campaign.add_parser("reject", help="reject a campaign with a reason its owner sees (admins)")
    reject.add_argument("id", type=int)
    reject.add_argument("--reason", required=True)
    listing = campaign.add_parser("list", help="list your campaigns")
    for sub in (*campaign.choices.values(),):
        sub.add_argument("--json", action="store_true", help="print JSON")
        _client_options(sub)
    del listing

    datasets = commands.add_parser("datasets", help="add datasets to an open campaign").add_subparsers(
        dest="action", required=True
    )
    add = datasets.add_parser("add", help="send JSON lines (one dataset a line) to an open campaign")
    add.add_argument("id", type=int)
    add.add_argument("file", help="file of JSON lines, or - for stdin")
    add.add_argument("--batch", type=int, default=1000, help="datasets sent per request")
    add.add_argument("--quiet", action="store_true", help="no progress bar")
    _client_options(add)

    results = commands.add_parser("results", help="download a campaign's results")
    results.add_argument("id", type=int)
    results.add_argument("--format", choices=("json", "msgpack", "csv"), default="json")
    results.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    results.add_argument("--verified", action="store_true", help="only results a quorum (or trusted worker) settled")
    results.add_argument(
        "--every-version", action="store_true", help="also results of older kernel versions (default: the newest)"
    )
    results.add_argument(
        "--follow", action="store_true", help="print each result as a JSON line as it is stored; exit when complete"
    )
    _client_options(results)

    worker = commands.add_parser(
        "worker", help="run a headless worker until its campaign is complete (or, with --wait, until stopped)"
    )
    worker.add_argument("--server", default=os.environ.get("DISTRIBUTE_SERVER", "http://127.0.0.1:8000"))
    worker.add_argument("--campaign", type=int, help="campaign id (default: any)")
    worker.add_argument("--tasks", type=int, help="stop after this many tasks")
    worker.add_argument("--slots", type=int, default=2, help="tasks held at once (prefetch)")
    worker.add_argument("--quiet", action="store_true", help="no progress display")
    worker.add_argument(
        "--processes", type=int, help="sessions computing at once, each in its own sandbox process (default: the cores)"
    )
    worker.add_argument(
        "--wait", action="store_true", help="never exit for lack of work: wait for it, reconnecting with backoff"
    )
    worker.add_argument("--max-backoff", type=float, default=60.0, help="longest wait between reconnections (s)")

    commands.add_parser("settings", help="print the table of settings")
    return parser


def _client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", default=os.environ.get("DISTRIBUTE_SERVER", "http://127.0.0.1:8000"))
    parser.add_argument("--token", default=os.environ.get("DISTRIBUTE_TOKEN"))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except DistributeError as exc:
        print(f"distribute: {exc}", file=sys.stderr)
        return 2
    except ExceptionGroup as group:  # raised from inside a nursery
        matched, _ = group.split(DistributeError)
        if matched is None:
            raise
        print(f"distribute: {_first(matched)}", file=sys.stderr)
        return 2
    except httpx.HTTPError as exc:
        print(f"distribute: cannot reach the server: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _first(group: BaseExceptionGroup) -> BaseException:
    error = group.exceptions[0]
    return _first(error) if isinstance(error, BaseExceptionGroup) else error


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "settings":
        print(settings_table())
        return 0
    if args.command == "serve":
        return _serve(args)
    if args.command == "user":
        return grant_admin(args) if args.action == "grant-admin" else create_user(args)
    if args.command == "worker":
        return _worker(args)
    if args.command == "results":
        return _results(args)
    if args.command == "datasets":
        from .cli_datasets import add_datasets

        with _client(args) as client:
            return add_datasets(client, args.id, args.file, batch=args.batch, quiet=args.quiet)
    return _campaign(args)


def masked_url(url: str) -> str:
    """`url` with its password replaced by "***", for printing (logs and terminals are not secret)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _serve(args: argparse.Namespace) -> int:
    from .app import serve
    from .logs import configure_logging
    from .plugins import make_scheduler

    overrides = {"host": args.host, "port": args.port, "database": args.database, "scheduler": args.scheduler}
    settings = load_settings(args.settings, overrides=overrides)
    make_scheduler(settings.scheduler)  # an unknown name fails here, before anything starts
    if settings.smtp_host and not settings.public_url:
        # Links in mail (password resets) must not be built from a Host header a client chose.
        raise SettingsError("smtp_host is set but public_url is not: set public_url to the URL visitors use")
    configure_logging(settings)  # stderr, as text or JSON lines (log_format); stdout keeps the one "serving on" line
    log = logging.getLogger("distribute.cli")

    async def run() -> None:
        # SIGINT and SIGTERM stop the server by cancelling it, so that the shutdown path runs
        # (results flushed, leases released). A KeyboardInterrupt raised into whatever code was
        # running at that moment could leave Trio or a storage transaction half-done.
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                running = await nursery.start(serve, settings)
                _collect_garbage_rarely()
                print(
                    f"distribute serving on {', '.join(running.urls)} (database {masked_url(settings.database)})",
                    flush=True,
                )
                async for signum in signals:
                    log.warning("distribute stopping (%s)", signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    break

    trio.run(run)
    return 0


def _collect_garbage_rarely() -> None:
    """Garbage-collector policy of a serving process, for the dispatch latency tail (BENCHMARKS.md).

    With default thresholds, Python's full collections walk every object of every connection while
    connections come in (~220 container objects each): 1,000 workers arriving set off 4-5 full
    collections of 66-1,100 ms (on a busy 2-core machine), each a stall of every session, and they
    collected nothing. So what start-up made (modules, the app, the database mappings) is frozen out
    of collections, and young collections run after 20,000 net allocations instead of 700 (an older
    generation after 20 younger ones, not 10): a full collection is considered after 8 million net
    allocations instead of 70,000, so arriving connections no longer set them off, while cyclic
    garbage is still collected.
    """

    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def _client(args: argparse.Namespace) -> httpx.Client:
    if not args.token:
        raise DistributeError("an API token is needed: --token or DISTRIBUTE_TOKEN")
    return httpx.Client(base_url=args.server.rstrip("/"), headers={"Authorization": f"Bearer {args.token}"}, timeout=60)


def _checked(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            body = response.json()
            message = body.get("error", response.text)
            if body.get("field"):  # an upload refused: name it, as the console shows it at its field
                message = f"{body['field']}: {message}"
            if "details" in body:
                message += ": " + json.dumps(body["details"])
        except ValueError:
            message = response.text
        raise DistributeError(f"server said {response.status_code}: {message}")
    return response.json()


def _campaign(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.action == "create":
            if bool(args.generator) == args.open:
                raise DistributeError("give --generator, or --open for a campaign whose datasets you add later")
            files = {"kernel": (args.kernel.name, args.kernel.read_bytes())}
            if args.generator:
                files["generator"] = (args.generator.name, args.generator.read_bytes())
            if args.static:
                files["static_dataset"] = (args.static.name, args.static.read_bytes())
            if args.comparator:
                files["comparator"] = (args.comparator.name, args.comparator.read_bytes())
            if args.spot_checks:
                files["spot_checks"] = (args.spot_checks.name, args.spot_checks.read_bytes())
            form = {
                "name": args.name or args.kernel.stem,
                "description": args.description,
                "priority": str(args.priority),
                "weight": str(args.weight),
                "replication": str(args.replication),
            }
            if args.task_timeout:
                form["task_timeout"] = str(args.task_timeout)
            if args.skip_check:
                form["skip_check"] = "true"
            if args.open:
                form["open"] = "true"
            campaign = _checked(client.post("/api/campaigns", data=form, files=files))
            print(json.dumps(campaign, indent=2) if args.json else f"created campaign {campaign['id']}")
        elif args.action == "list":
            campaigns = _checked(client.get("/api/campaigns"))["campaigns"]
            if args.json:
                print(json.dumps(campaigns, indent=2))
            for c in campaigns if not args.json else ():
                d = c["datasets"]
                print(f"{c['id']:>6}  {_state(c):<10} {d['done']:>9}/{d['total']:<9} {c['name']}")
        elif args.action == "show":
            campaign = _checked(client.get(f"/api/campaigns/{args.id}"))
            print(json.dumps(campaign, indent=2) if args.json else _describe(campaign, args.server))
        elif args.action == "update":
            files = {"kernel": (args.kernel.name, args.kernel.read_bytes())}
            if args.static:
                files["static"] = (args.static.name, args.static.read_bytes())
            form = {"recompute": str(args.recompute).lower(), "skip_check": str(args.skip_check).lower()}
            campaign = _checked(client.post(f"/api/campaigns/{args.id}/kernel", data=form, files=files))
            print(
                json.dumps(campaign, indent=2)
                if args.json
                else f"campaign {args.id} runs kernel version {campaign['kernel_version']}"
            )
        elif args.action == "reset":
            _checked(client.post(f"/api/campaigns/{args.id}/reset"))
            print(f"reset campaign {args.id}")
        elif args.action in ("resume", "pause", "cancel", "close"):
            campaign = _checked(client.post(f"/api/campaigns/{args.id}/{args.action}"))
            done = {"resume": "resumed", "pause": "paused", "cancel": "cancelled", "close": "closed"}[args.action]
            print(json.dumps(campaign, indent=2) if args.json else f"{done} campaign {args.id}")
        elif args.action == "delete":
            _checked(client.delete(f"/api/campaigns/{args.id}"))
            print(f"deleted campaign {args.id}")
        elif args.action in ("approve", "reject"):  # admins only: anybody else's token gets a 404
            body = {"reason": args.reason} if args.action == "reject" else None
            campaign = _checked(client.post(f"/api/admin/campaigns/{args.id}/{args.action}", json=body))
            print(json.dumps(campaign, indent=2) if args.json else f"{args.action}d campaign {args.id}")
    return 0


def _state(c: dict[str, Any]) -> str:
    """The state the server computed ("finished with 3 failed", "paused"); a server without it: the status."""
    label: str = c.get("state", {}).get("label") or c["status"]
    return label


def _describe(c: dict[str, Any], server: str) -> str:
    d = c["datasets"]
    lines = [
        f"campaign {c['id']}: {c['name']} ({_state(c)})",
        f"  datasets  {d['done']} done, {d['pending']} pending, {d['leased']} leased, {d['failed']} failed, {d['total']} total",
        f"  results   {c['results']}   kernel errors {c['errors']}   workers {c['workers']}   compute {c['compute_seconds']} s",
    ]
    v = c.get("verification")
    if v and (c.get("replication", 1) > 1 or v["verified"] or v["flagged_workers"]):
        lines.append(
            f"  verified  {v['verified']} ({v['trusted']} trusted)   pending verification {v['pending']}"
            f"   conflict {v['conflict']}   flagged workers {v['flagged_workers']}"
        )
    if c.get("kernel_version", 1) > 1:
        lines.append(f"  kernel    version {c['kernel_version']}")
    review = c.get("review", {})
    if review.get("state") == "pending":
        lines.append(
            "  review    pending: only workers and embeds that name this campaign get it, until an admin approves it"
        )
    elif review.get("state") == "rejected":
        lines.append(f"  review    rejected: {review['reason']}   (no worker gets it)")
    if c["generation_error"]:
        lines.append(f"  generator failed: {c['generation_error']}")
    if c.get("open"):
        lines.append(
            f"  open: add datasets (distribute datasets add {c['id']} FILE), then: distribute campaign close {c['id']}"
        )
    if c.get("state", {}).get("key") == "paused":
        lines.append(f"  paused: {c['state']['reason']}   (resume: distribute campaign resume {c['id']})")
    for group in c.get("kernel_error_groups", [])[:5]:
        numbers = group.get("example_numbers", [0] * len(group["examples"]))
        examples = ", ".join(
            f"#{n} (id {i})" if n else f"id {i}" for i, n in zip(group["examples"], numbers, strict=True)
        )
        lines.append(
            f"  kernel error x{group['count']} on {group['datasets']} datasets (e.g. {examples}): {group['message']}"
        )
    from .embed import embed_snippet  # here: the web adapters are not needed by other commands

    lines += ["  embed this on a web page:", "    " + embed_snippet(server, c["id"])]
    return "\n".join(lines)


def _results(args: argparse.Namespace) -> int:
    if args.follow:
        if args.format != "json" or args.output or args.verified:
            raise DistributeError("--follow prints JSON lines on stdout: no --format other than json, -o or --verified")
        from .follow import follow

        with _client(args) as client:
            return follow(client, args.id)
    with (
        _client(args) as client,
        client.stream(
            "GET",
            f"/api/campaigns/{args.id}/results",
            params={
                "format": args.format,
                "verified": str(args.verified).lower(),
                "every_version": str(args.every_version).lower(),
            },
        ) as response,
    ):
        if response.status_code >= 400:
            response.read()
            _checked(response)
        out = open(args.output, "wb") if args.output else sys.stdout.buffer  # noqa: SIM115
        try:
            with Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=None,
                transient=True,
                disable=not args.output,
            ) as progress:
                task = progress.add_task(f"campaign {args.id}", total=None)
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    progress.update(task, advance=len(chunk))
        finally:
            if args.output:
                out.close()
    if args.output:
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _worker(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .daemon import DaemonOptions, choose_display, default_processes, run_daemon

    options = DaemonOptions(
        server=args.server,
        campaign=args.campaign,
        processes=args.processes or default_processes(),
        wait=args.wait,
        slots=args.slots,
        max_tasks=args.tasks,
        backoff_cap=args.max_backoff,
    )
    display = choose_display(Console(stderr=True), args.quiet)
    # SIGTERM and SIGINT stop it cleanly: the sessions hand their tasks back to the server first.
    summary = trio.run(lambda: run_daemon(options, display=display, signals=True))
    print(f"worker done: {summary.tasks_done} tasks, {summary.errors} errors ({summary.reason})", flush=True)
    return 0
