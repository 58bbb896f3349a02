"""What an owner uploads for a new campaign, and the checks it must pass before it is stored.

The sources are bounded, UTF-8 text without NUL bytes; the kernel, the generator and the comparator
must parse (they are parsed in the sandbox, never run); spot checks are a JSON array of known
answers. Then, unless the owner skips it (a kernel that needs browser-only APIs), a trial in the
sandbox (`distribute.sandbox.trial`) runs the kernel with its static dataset on the generator's first
`check_datasets` datasets: a generator that fails, a kernel that cannot start or that fails on all of
them is refused. `checked_sources` applies all of it and returns the texts ready for storage, or
raises `ValidationError` (`SourceError` naming the source at fault, with a line and column where
there are any). The API and the console accept and refuse exactly
the same uploads because both come through here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import msgpack
from pydantic import BaseModel, Field

from ..errors import SourceError, ValidationError
from ..models import DESCRIPTION_MAX_CHARS
from ..sandbox.kernels import check_kernel, kernel_syntax_error
from ..sandbox.trial import TrialLimits, TrialProblem, check_generator, trial_run
from ..settings import Settings
from ..work.verification import canonical, comparator_kernel

__all__ = [
    "MAX_SPOT_CHECKS",
    "CampaignFields",
    "CheckedSources",
    "Uploads",
    "check_comparator",
    "checked_sources",
    "decode_source",
    "parse_spot_checks",
]

MAX_SPOT_CHECKS = 1000


class CampaignFields(BaseModel):
    """A new campaign's settings (the API's form and the console's share them)."""

    name: str = Field(default="", max_length=200)
    description: str = Field(
        default="",
        max_length=DESCRIPTION_MAX_CHARS,
        description=f"Shown to volunteers on the embed card, whole (at most {DESCRIPTION_MAX_CHARS} characters; "
        "a long one opens from a More button on the card).",
    )
    priority: int = Field(default=0, ge=-1000, le=1000)
    weight: float = Field(default=1.0, gt=0, le=1e6)
    replication: int = Field(default=1, ge=1, le=10)
    task_timeout: float | None = Field(default=None, gt=0, le=86400)
    open: bool = Field(
        default=False,
        description="true: an open campaign with no generator; its owner adds datasets"
        " (POST /api/campaigns/ID/datasets) until closing it (POST /api/campaigns/ID/close)",
    )


@dataclass(frozen=True)
class Uploads:
    """A new campaign's sources as uploaded (None: not given)."""

    kernel: bytes
    generator: bytes
    static_dataset: bytes | None = None
    comparator: bytes | None = None
    spot_checks: bytes | None = None


@dataclass(frozen=True)
class CheckedSources:
    """Uploads that passed every check: texts as stored, spot checks msgpack-packed."""

    kernel: str
    generator: str
    static_dataset: str
    comparator: str | None
    spot_checks: list[tuple[bytes, bytes]]


# Leading bytes of binary files an owner may pick by mistake (an image, an archive, a compiled
# module), so the error says what was uploaded instead of pointing at a byte that is not UTF-8.
BINARY_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"%PDF-", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"PK\x05\x06", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x00asm", "a WebAssembly module"),
    (b"\x7fELF", "an executable (ELF)"),
)
UTF16_MARKS = (b"\xff\xfe", b"\xfe\xff")


def decode_source(label: str, data: bytes, limit: int) -> str:
    """Uploaded JavaScript or text: bounded, UTF-8, no NUL bytes (binary garbage); SourceError names `label`."""
    try:
        return _decoded(label, data, limit)
    except ValidationError as exc:
        raise SourceError(label, str(exc)) from None


def _decoded(label: str, data: bytes, limit: int) -> str:
    if len(data) > limit:
        raise ValidationError(f"{label} is {len(data)} bytes; the limit is {limit}")
    for signature, kind in BINARY_SIGNATURES:
        if data.startswith(signature):
            raise ValidationError(f"{label} is {kind}, not text: upload the source as UTF-8 text")
    if data.startswith(UTF16_MARKS):
        raise ValidationError(f"{label} is UTF-16 text (it starts with a byte-order mark): save it as UTF-8")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{label} is not valid UTF-8 text (byte {exc.start})") from None
    if "\x00" in text:
        raise ValidationError(f"{label} contains NUL bytes: upload text, not a binary file")
    return text


def parse_spot_checks(text: str) -> list[tuple[bytes, bytes]]:
    """Known-answer datasets: a JSON array of {"dataset": ..., "result": ...} (msgpack-packed here)."""
    try:
        items = json.loads(text)
    except ValueError as exc:
        raise ValidationError(f"spot_checks is not valid JSON: {exc}") from None
    if not isinstance(items, list) or len(items) > MAX_SPOT_CHECKS:
        raise ValidationError(f"spot_checks must be a JSON array of at most {MAX_SPOT_CHECKS} items")
    checks: list[tuple[bytes, bytes]] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or set(item) != {"dataset", "result"} or item["result"] is None:
            raise ValidationError(f'spot_checks[{i}] must be {{"dataset": ..., "result": ...}} with a non-null result')
        checks.append((msgpack.packb(item["dataset"]), canonical(item["result"])))
    return checks


async def check_comparator(comparator: str, *, timeout: float, heap_mib: int) -> None:
    """Parse (never run) a comparator exactly as the verifier will load it; ValidationError if it fails.

    The verifier wraps the owner's text in an expression (`verification.comparator_kernel`), so the
    text must be one expression: a function or an object with `compare`. A comparator that does
    not parse would otherwise only be logged at verification time, and replicas compared by bytes.
    """
    syntax = await kernel_syntax_error(comparator_kernel(comparator), timeout=timeout, heap_mib=heap_mib)
    if syntax is not None:
        raise ValidationError(
            f"the comparator does not parse: {syntax} (it must be one expression, "
            "`function (a, b) { ... }` or `({ compare: function (a, b) { ... } })`)"
        )


SKIP_HINT = " (a kernel that needs browser-only APIs can skip this check: skip_check)"


def _refused(problem: TrialProblem, hint: str = "") -> SourceError:
    where = ""
    if problem.line is not None:
        where = f" (line {problem.line}" + ("" if problem.column is None else f", column {problem.column}") + ")"
    message = problem.message
    if "\n" in message:  # a caret under a source line: the position goes first, the lines stay as they are
        first, rest = message.split("\n", 1)
        message = f"{first}{where}{hint}\n{rest}"
    else:
        message += where + hint
    return SourceError(problem.field, message, problem.line, problem.column)


async def checked_sources(
    uploads: Uploads,
    settings: Settings,
    *,
    skip_check: bool = False,
    task_timeout: float | None = None,
    open_campaign: bool = False,
) -> CheckedSources:
    """Decode and check every upload, then try the campaign (unless `skip_check`); the first problem raises.

    `task_timeout` is the campaign's own limit per task (the setting's default when None). An
    `open_campaign` has no generator (its owner sends the datasets): one uploaded is refused, and its
    trial only loads the kernel with its static dataset."""
    limit = settings.max_source_bytes
    kernel = decode_source("kernel", uploads.kernel, limit)
    generator = decode_source("generator", uploads.generator, limit)
    if open_campaign and generator.strip():
        raise SourceError("generator", "an open campaign has no generator: its owner sends the datasets")
    static = decode_source("static_dataset", uploads.static_dataset, limit) if uploads.static_dataset else ""
    comparator = decode_source("comparator", uploads.comparator, limit) if uploads.comparator else ""
    spot_checks = uploads.spot_checks
    checks = parse_spot_checks(decode_source("spot_checks", spot_checks, limit)) if spot_checks else []
    for field, text in (("kernel", kernel), ("generator", generator)):
        if not text.strip() and not (open_campaign and field == "generator"):
            raise SourceError(field, "kernel and generator must not be empty")
    timeout, heap = settings.generator_timeout, settings.generator_heap
    syntax = await check_kernel(kernel, timeout=timeout, heap_mib=heap)
    if syntax is not None:
        problem = TrialProblem("kernel", f"the kernel does not parse: {syntax.message}", syntax.line, syntax.column)
        raise _refused(problem)
    generator_syntax = None if open_campaign else await check_generator(generator, timeout=timeout, heap_mib=heap)
    if generator_syntax is not None:
        raise _refused(generator_syntax)
    if comparator:
        await check_comparator(comparator, timeout=timeout, heap_mib=heap)
    if not skip_check and settings.check_datasets > 0:
        limits = trial_limits(settings, timeout, heap, task_timeout or settings.task_timeout)
        tried = await trial_run(kernel, static, "" if open_campaign else generator, limits)
        if tried is not None:
            raise _refused(tried, SKIP_HINT if tried.field != "generator" else "")
    return CheckedSources(kernel, generator, static, comparator or None, checks)


def trial_limits(settings: Settings, timeout: float, heap_mib: int, task_timeout: float) -> TrialLimits:
    """The limits of a trial before a kernel goes live (at creation and for a new kernel version)."""
    return TrialLimits(
        datasets=settings.check_datasets,
        wall=settings.check_seconds,
        generator_timeout=timeout,
        heap_mib=heap_mib,
        max_dataset_bytes=settings.max_dataset_bytes,
        max_datasets=settings.max_datasets,
        max_result_bytes=settings.max_result_bytes,
        task_timeout=task_timeout,
    )
