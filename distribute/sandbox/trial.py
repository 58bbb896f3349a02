"""The check before a campaign goes live: its generator parsed, then a short trial run in the sandbox.

`check_generator` parses a generator as the sandbox will load it, never running it (the generator's
counterpart of `kernels.check_kernel`). `trial_run` takes the first few datasets from the generator
(a lazy or endless one is pulled only that far), loads the kernel with its static dataset and runs
main on them, all in one child of the pool, so it has the pool's limits (rlimits, heap, confinement)
and a wall clock of its own on top. It answers with the one problem that makes a campaign pointless
(a generator that fails, a kernel or static dataset that cannot start, a kernel that throws on every
dataset tried) and where it is, or None. An open campaign (no generator) has no dataset to try: its
kernel is only loaded with its static dataset. Whatever the sandbox cannot judge fairly (a timeout, a
memory limit, a crash: the server's V8 runs without its JIT and with its own heap limit, unlike a
browser) counts as no problem; so does one dataset computed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import trio

from ..errors import GenerationError, KernelError
from .generators import GeneratorRun
from .kernels import KernelRun
from .pool import GRACE, ChildDied, HardTimeout, Lease, SandboxPool, lease

__all__ = ["TrialLimits", "TrialProblem", "check_generator", "trial_run"]

# Kinds of kernel failure that would fail in every browser too; the rest (timeouts, memory, crashes) may be ours.
_LOAD_FAILURES = {"evaluate": "kernel", "shape": "kernel", "syntax": "kernel", "static": "static_dataset"}
_RUN_FAILURES = {"throw", "serialise"}
_JSON_POSITION = re.compile(r"\(line (\d+) column (\d+)\)")


@dataclass(frozen=True)
class TrialProblem:
    """Why a campaign is refused: the source at fault (an upload's field name), the message, and where."""

    field: str
    message: str
    line: int | None = None
    column: int | None = None


@dataclass(frozen=True)
class TrialLimits:
    """What a trial may take: `datasets` tried, `wall` seconds for the kernel's part, and the sandbox limits."""

    datasets: int
    wall: float
    generator_timeout: float
    heap_mib: int
    max_dataset_bytes: int
    max_datasets: int
    max_result_bytes: int
    task_timeout: float


def _frame(stack: str, name: str) -> tuple[int | None, int | None]:
    """The first frame of the owner's source (`name` is its sourceURL in the sandbox) as (line, column)."""
    match = re.search(re.escape(name) + r":(\d+):(\d+)", stack)
    return (int(match.group(1)), int(match.group(2))) if match else (None, None)


async def check_generator(
    source: str, *, timeout: float, heap_mib: int, pool: SandboxPool | None = None
) -> TrialProblem | None:
    """Parse (never run) a generator as the sandbox loads it: the problem, or None if it parses."""
    request = {"op": "check", "what": "generator", "source": source, "heap_mib": heap_mib, "timeout": timeout}
    async with lease(pool) as held:
        try:
            reply = await held.call(request, timeout)
        except (HardTimeout, ChildDied):
            return None  # not a verdict on the generator: generation reports it if it recurs
    if not reply["ok"] or reply["error"] is None:
        return None
    error = reply["error"]
    return TrialProblem("generator", str(error["message"]), error.get("line"), error.get("column"))


async def trial_run(
    kernel: str, static: str, generator: str, limits: TrialLimits, *, pool: SandboxPool | None = None
) -> TrialProblem | None:
    """Run the campaign on its first `limits.datasets` datasets: the problem that refuses it, or None."""
    bound = limits.generator_timeout * (limits.datasets + 1) + limits.wall + 2 * GRACE
    with trio.move_on_after(bound):
        async with lease(pool) as held:
            run = GeneratorRun(
                held,
                timeout=limits.generator_timeout,
                heap_mib=limits.heap_mib,
                max_dataset_bytes=limits.max_dataset_bytes,
                max_datasets=limits.max_datasets,
            )
            if not generator:  # an open campaign: no dataset yet, but the kernel must load with its static dataset
                return await _try_kernel(held, kernel, static, [], limits)
            datasets = await _first_datasets(run, generator, limits.datasets)
            if isinstance(datasets, TrialProblem):
                return datasets
            if not datasets:
                return None  # nothing to try the kernel on
            return await _try_kernel(held, kernel, static, datasets, limits)
    return None  # the trial ran out of time: no verdict


async def _first_datasets(run: GeneratorRun, generator: str, count: int) -> list[bytes] | TrialProblem:
    """Up to `count` datasets, pulled no further (at most `count` pulls: each brings one or ends it)."""
    datasets: list[bytes] = []
    try:
        await run._open(generator)
        for _ in range(count):
            items, done = await run.pull(count - len(datasets))
            datasets += items
            if done or len(datasets) >= count:
                break
    except GenerationError as exc:
        message = str(exc)
        return TrialProblem("generator", message, *_frame(message, "generator.js"))
    return datasets


async def _try_kernel(
    held: Lease, kernel: str, static: str, datasets: list[bytes], limits: TrialLimits
) -> TrialProblem | None:
    deadline = trio.current_time() + limits.wall
    run = KernelRun(
        held,
        kernel,
        static,
        heap_mib=limits.heap_mib,
        max_result_bytes=limits.max_result_bytes,
        load_timeout=limits.wall,
    )
    try:
        await run._load()
    except KernelError as exc:
        field = _LOAD_FAILURES.get(exc.kind)
        if field is None:
            return None
        where: tuple[int | None, int | None] = _frame(exc.stack, "kernel.js")
        if field == "static_dataset":  # a place in the static dataset itself, if JSON.parse named one
            match = _JSON_POSITION.search(exc.message)
            where = (int(match.group(1)), int(match.group(2))) if match else (None, None)
        return TrialProblem(field, exc.message, *where)
    if not datasets:
        return None  # it loads: that is all an open campaign's trial can tell
    first: KernelError | None = None
    for dataset in datasets:
        remaining = deadline - trio.current_time()
        if remaining <= 0:
            return None
        try:
            await run.run(dataset, min(limits.task_timeout, remaining))
        except KernelError as exc:
            if exc.kind not in _RUN_FAILURES:
                return None
            first = first or exc
            continue
        return None  # one dataset computed: the kernel works
    assert first is not None
    tried = f"all {len(datasets)} datasets" if len(datasets) > 1 else "the one dataset"
    message = f"the kernel failed on {tried} tried in the server's sandbox: "
    return TrialProblem("kernel", message + first.message, *_frame(first.stack, "kernel.js"))
