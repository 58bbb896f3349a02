"""The trial before a campaign goes live: generator parsed, first datasets pulled, kernel tried on them."""

from __future__ import annotations

import msgpack

from distribute.sandbox.pool import PoolLimits, open_sandbox_pool
from distribute.sandbox.trial import TrialLimits, TrialProblem, check_generator, trial_kernel, trial_run
from tests.conftest import SEED_GENERATOR, SEED_KERNEL, SEED_STATIC

LIMITS = TrialLimits(
    datasets=3,
    wall=10.0,
    generator_timeout=5.0,
    heap_mib=64,
    max_dataset_bytes=1 << 20,
    max_datasets=1_000_000,
    max_result_bytes=1 << 20,
    task_timeout=30.0,
)
COUNTING = "({main: function () { var a = []; for (var i = 0; i < 10; i++) a.push({i: i}); return a; }})"


async def test_the_seed_campaign_passes() -> None:
    assert await trial_run(SEED_KERNEL, SEED_STATIC, SEED_GENERATOR, LIMITS) is None


async def test_a_kernel_without_main_is_refused_at_the_kernel() -> None:
    problem = await trial_run("({loadStaticDataset: function (t) {}})", "", COUNTING, LIMITS)
    assert problem is not None and problem.field == "kernel"
    assert "main is not a function" in problem.message


async def test_a_static_dataset_that_is_not_json_is_refused_with_its_line_and_column() -> None:
    problem = await trial_run(SEED_KERNEL, '{"divisor":\n 123', SEED_GENERATOR, LIMITS)
    assert problem is not None and problem.field == "static_dataset"
    assert "loadStaticDataset threw" in problem.message and "JSON" in problem.message
    assert (problem.line, problem.column) == (2, 5)


async def test_a_kernel_that_fails_every_dataset_is_refused_with_the_line_that_threw() -> None:
    kernel = "({\n  main: function (d) {\n    throw new RangeError('no ' + d.i);\n  }\n})"
    problem = await trial_run(kernel, "", COUNTING, LIMITS)
    assert problem == TrialProblem(
        "kernel", "the kernel failed on all 3 datasets tried in the server's sandbox: RangeError: no 0", 3, 11
    )


async def test_a_kernel_that_fails_some_datasets_is_accepted() -> None:
    kernel = "({main: function (d) { if (d.i < 2) throw new Error('not yet'); return d.i; }})"
    assert await trial_run(kernel, "", COUNTING, LIMITS) is None


async def test_an_endless_generator_is_pulled_only_as_far_as_the_trial_needs() -> None:
    # Pulling a fourth dataset would make the generator throw, and the trial would blame it.
    generator = "({main: function* () { for (var i = 0; ; i++) { if (i >= 3) throw new Error('pulled ' + i); yield {i: i}; } }})"
    assert await trial_run("({main: function (d) { return d.i; }})", "", generator, LIMITS) is None
    deeper = TrialLimits(**{**LIMITS.__dict__, "datasets": 4})
    problem = await trial_run("({main: function (d) { return d.i; }})", "", generator, deeper)
    assert problem is not None and problem.field == "generator" and "pulled 3" in problem.message


async def test_a_generator_that_throws_is_refused_with_its_line() -> None:
    generator = "({\n  main: function () {\n    throw new Error('no datasets today');\n  }\n})"
    problem = await trial_run(SEED_KERNEL, SEED_STATIC, generator, LIMITS)
    assert problem is not None and problem.field == "generator"
    assert "the generator threw in main(): Error: no datasets today" in problem.message
    assert (problem.line, problem.column) == (3, 11)


async def test_a_generator_that_does_not_parse_is_located_without_running_it() -> None:
    generator = "({main: function () {\n  return [1,;\n}})"
    problem = await check_generator(generator, timeout=5.0, heap_mib=64)
    assert problem is not None and problem.field == "generator"
    assert (problem.line, problem.column) == (2, 13)
    first, source, caret = problem.message.split("\n")
    assert first.startswith("syntax error in the generator, line 2: SyntaxError")
    assert caret.index("^") == source.index(";")  # the marker stands under the token at fault


async def test_generators_that_parse_pass_the_check_as_scripts_or_expressions() -> None:
    for generator in (SEED_GENERATOR, "var g = {main: function () { return [1]; }}; g", "{main: function () {}}"):
        assert await check_generator(generator, timeout=5.0, heap_mib=64) is None, generator


async def test_the_trial_runs_in_one_child_of_the_servers_pool() -> None:
    async with open_sandbox_pool(PoolLimits(max_children=2)) as pool:
        assert await trial_run(SEED_KERNEL, SEED_STATIC, SEED_GENERATOR, LIMITS, pool=pool) is None
        assert pool.live == 1  # generator and kernel took turns in the same confined child, now idle


async def test_a_kernel_that_never_returns_is_stopped_at_the_trials_wall_clock_and_not_refused() -> None:
    # A slow kernel may be fine in a browser's JIT: the trial stops it and gives no verdict.
    short = TrialLimits(**{**LIMITS.__dict__, "wall": 0.5})
    async with open_sandbox_pool(PoolLimits(max_children=2)) as pool:
        assert await trial_run("({main: function () { for (;;) {} }})", "", COUNTING, short, pool=pool) is None
        assert pool.live <= 1


# --------------------------------------------------------------------------- a new kernel version


async def test_a_new_kernel_version_is_tried_on_stored_datasets() -> None:
    stored = [msgpack.packb({"i": i}) for i in range(3)]
    problem = await trial_kernel("({main: function (d) { throw new Error('v2 ' + d.i); }})", "", stored, LIMITS)
    assert problem is not None and problem.field == "kernel" and "v2 0" in problem.message


async def test_a_new_kernel_version_that_computes_a_stored_dataset_passes() -> None:
    stored = [msgpack.packb({"min": 0, "max": 100})]
    assert await trial_kernel(SEED_KERNEL, SEED_STATIC, stored, LIMITS) is None


async def test_without_stored_datasets_a_new_kernel_version_is_still_loaded() -> None:
    problem = await trial_kernel(SEED_KERNEL, '{"divisor":\n 123', [], LIMITS)
    assert problem is not None and problem.field == "static_dataset"
