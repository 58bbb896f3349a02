"""The JavaScript sandbox: generators and kernels in child processes, every failure a clear error."""

from __future__ import annotations

import os
import time
from functools import partial
from pathlib import Path

import msgpack
import pytest
import trio

from distribute.errors import GenerationError, KernelError, SandboxError
from distribute.sandbox.generators import open_generator
from distribute.sandbox.kernels import SyntaxProblem, check_kernel, kernel_syntax_error, open_kernel
from distribute.sandbox.pool import PoolLimits, SandboxPool, current_pool, open_sandbox_pool
from tests.conftest import SEED_GENERATOR, SEED_KERNEL, SEED_STATIC

LIMITS = {"timeout": 5.0, "heap_mib": 64, "max_dataset_bytes": 1 << 20, "max_datasets": 1_000_000}


async def generate(
    source: str, n: int = 10, *, pool: SandboxPool | None = None, **limits: float
) -> tuple[str, list[object], bool]:
    async with open_generator(source, **{**LIMITS, **limits}, pool=pool) as run:
        items, done = await run.pull(n)
        return run.mode, [msgpack.unpackb(item) for item in items], done


async def generation_error(source: str, **limits: float) -> str:
    with pytest.raises(GenerationError) as caught:
        await generate(source, **limits)
    return str(caught.value)


# --------------------------------------------------------------------------- generators: happy paths


async def test_array_mode_seed_generator() -> None:
    async with open_generator(SEED_GENERATOR, **LIMITS) as run:
        assert run.mode == "array"
        first, done = await run.pull(30)
        assert not done and len(first) == 30
        rest, done = await run.pull(1000)
        assert done and len(rest) == 70
        assert await run.pull(10) == ([], True)
    datasets = [msgpack.unpackb(item) for item in first + rest]
    assert datasets == [{"min": i, "max": i + 100} for i in range(0, 10000, 100)]
    assert first[0] == msgpack.packb({"min": 0, "max": 100})  # exactly msgpack.packb of the value


async def test_lazy_function_star_pulls_100k_in_batches() -> None:
    source = "({ main: function* () { for (let i = 0; ; i++) yield {i: i, sq: i * i, tag: 'd' + i}; } })"
    async with open_generator(source, **LIMITS) as run:
        assert run.mode == "iterator"
        got: list[bytes] = []
        started = time.monotonic()
        while len(got) < 100_000:
            items, done = await run.pull(2000)
            assert not done and items
            got.extend(items)
        elapsed = time.monotonic() - started
    assert len(got) == 100_000
    assert msgpack.unpackb(got[99_999]) == {"i": 99_999, "sq": 99_999**2, "tag": "d99999"}
    assert all(msgpack.unpackb(b)["i"] == i for i, b in enumerate(got[:1000]))
    assert elapsed < 10, f"100k lazy datasets took {elapsed:.1f} s"


async def test_lazy_generator_exhausts_and_custom_iterators() -> None:
    mode, items, done = await generate("({main: function* () { yield 1; yield [2]; yield {three: 3}; }})")
    assert (mode, items, done) == ("iterator", [1, [2], {"three": 3}], True)
    # an object with next() and an iterable (a Set) both count as iterators
    counter = "({main() { let i = 0; return {next: () => (i < 3 ? {value: i++, done: false} : {done: true})}; }})"
    assert await generate(counter) == ("iterator", [0, 1, 2], True)
    assert await generate("({main() { return new Set(['a', 'b']); }})") == ("iterator", ["a", "b"], True)


async def test_bare_object_literal_and_typed_arrays() -> None:
    mode, items, done = await generate("{main: function () { return [{bytes: new Uint8Array([1, 2, 3])}]; }}")
    assert (mode, items, done) == ("array", [{"bytes": [1, 2, 3]}], True)


async def test_skip_resumes_in_both_modes() -> None:
    lazy = "({main: function* () { for (let i = 0; i < 50000; i++) yield i; }})"
    async with open_generator(lazy, **LIMITS) as run:
        await run.skip(30_000)
        items, done = await run.pull(3)
        assert [msgpack.unpackb(b) for b in items] == [30_000, 30_001, 30_002] and not done
        await run.skip(10**6)  # past the end: stops, exhausted
        assert await run.pull(5) == ([], True)
    async with open_generator(SEED_GENERATOR, **LIMITS) as run:
        await run.skip(98)
        items, done = await run.pull(5)
        assert [msgpack.unpackb(b)["min"] for b in items] == [9800, 9900] and done


# --------------------------------------------------------------------------- generators: every failure


async def test_generator_syntax_error_names_line_and_v8_message() -> None:
    message = await generation_error("(function () {\n  return {main: function () {\n    return [1, 2;\n  }};\n})()")
    assert "syntax error in the generator" in message
    assert "line 3" in message and "Unexpected token ';'" in message


async def test_generator_exception_in_main() -> None:
    message = await generation_error("({main() { throw new TypeError('no datasets today'); }})")
    assert "threw" in message and "TypeError: no datasets today" in message and "generator.js:1" in message


async def test_generator_exception_while_evaluating_and_in_iterator() -> None:
    assert "being evaluated: Error: early" in await generation_error("(function () { throw new Error('early'); })()")
    lazy = "({main: function* () { yield 1; throw new RangeError('late'); }})"
    assert "RangeError: late" in await generation_error(lazy)


async def test_generator_timeout_in_main() -> None:
    started = time.monotonic()
    message = await generation_error("({main() { while (true) {} }})", timeout=0.5)
    assert message == "generator timed out after 0.5 s"
    assert time.monotonic() - started < 5
    # a heap near its limit at the timeout says where the time probably went
    hoarder = "({main() { var a = new Array(6e6).fill(0.5); while (true) {} }})"
    message = await generation_error(hoarder, timeout=0.5)
    assert message.startswith("generator timed out after 0.5 s (its heap had grown to ")
    assert message.endswith(" MiB of its 64 MiB memory limit)")


async def test_generator_timeout_applies_to_each_pull() -> None:
    slow = "({main: function* () { yield 1; while (true) {} }})"
    async with open_generator(slow, **{**LIMITS, "timeout": 0.5}) as run:
        assert run.mode == "iterator"
        with pytest.raises(GenerationError, match=r"generator timed out after 0\.5 s while producing datasets"):
            for _ in range(3):
                await run.pull(10)
        with pytest.raises(GenerationError, match="already failed"):
            await run.pull(1)


async def test_generator_heap_blowup() -> None:
    message = await generation_error("({main() { var a = []; while (true) a.push({x: 1}); }})")
    assert message == "the generator exceeded its memory limit of 64 MiB"


async def test_generator_typed_array_blowup_hits_rlimit() -> None:
    message = await generation_error("({main() { var a = []; while (true) a.push(new Uint8Array(1e7)); }})")
    assert "Array buffer allocation failed" in message and "ran out of memory" in message


async def test_generator_fatal_v8_oom_kills_only_the_child() -> None:
    message = await generation_error("({main() { return new Array(5e8).fill(0); }})", timeout=20)
    assert "crashed the sandbox" in message and "out of memory" in message
    assert await generate("({main() { return [42]; }})") == ("array", [42], True)  # a fresh child takes over


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("42", "must evaluate to an object with a main function; it evaluated to a number"),
        ("({})", "main is not a function (it is undefined)"),
        ("({main: 'yes'})", "main is not a function (it is a string)"),
        ("({main() { return 7; }})", "must return an array or an iterator"),
        ("({main() { return {a: 1}; }})", "must return an array or an iterator"),
        ("({main: async function () { return []; }})", "returned a Promise"),
    ],
)
async def test_generator_shape_errors(source: str, expected: str) -> None:
    assert expected in await generation_error(source)


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [
        ("{f: function () {}}", 'property "f" is a function'),
        ("{s: Symbol('x')}", 'property "s" is a symbol'),
        ("{n: 10n}", 'property "n" is a BigInt'),
        ("[1, undefined]", "element [1] is undefined"),
        ("{u: undefined}", 'property "u" is undefined'),
        ("{x: NaN}", 'property "x" is NaN'),
        ("(() => { const o = {}; o.self = o; return o; })()", "circular structure"),
        ("new Map([[1, 2]])", "is a Map"),
    ],
)
async def test_generator_unserialisable_datasets(dataset: str, expected: str) -> None:
    message = await generation_error(f"({{main() {{ return [1, 2, {dataset}]; }}}})")
    assert "dataset at index 2 cannot be serialised" in message and expected in message
    lazy = await generation_error(f"({{main: function* () {{ yield 1; yield {dataset}; }}}})")
    assert "dataset at index 1 cannot be serialised" in lazy and expected in lazy


async def test_generator_oversized_dataset() -> None:
    message = await generation_error("({main() { return ['ok', 'x'.repeat(5000)]; }})", max_dataset_bytes=1000)
    assert "dataset at index 1 is too large" in message and "5,003 bytes" in message and "1,000 bytes" in message
    huge = await generation_error("({main() { return ['\\u0001'.repeat(50000)]; }})", max_dataset_bytes=1000)
    assert "dataset at index 0 is too large" in huge


async def test_generator_too_many_datasets() -> None:
    array = await generation_error("({main() { return new Array(11).fill(0); }})", max_datasets=10)
    assert array == "the generator produced more than 10 datasets (the limit)"
    lazy = "({main: function* () { for (let i = 0; ; i++) yield i; }})"
    with pytest.raises(GenerationError, match="more than 10 datasets"):
        async with open_generator(lazy, **{**LIMITS, "max_datasets": 10}) as run:
            await run.pull(8)
            await run.pull(8)
    # exactly the limit is fine
    assert len((await generate("({main: function* () { for (let i = 0; i < 10; i++) yield i; }})", 20))[1]) == 10


# --------------------------------------------------------------------------- kernels


async def test_seed_kernel_with_static_dataset_returns_values_and_null() -> None:
    async with open_kernel(SEED_KERNEL, SEED_STATIC, heap_mib=64, max_result_bytes=1 << 20) as kernel:
        value, ms = await kernel.run(msgpack.packb({"min": 100, "max": 200}), 5)
        assert msgpack.unpackb(value) == [123] and ms >= 0
        assert (await kernel.run(msgpack.packb({"min": 0, "max": 100}), 5))[0] == msgpack.packb([0])
        assert (await kernel.run(msgpack.packb({"min": 1, "max": 100}), 5))[0] is None  # null: no result


async def test_kernel_async_main_and_undefined() -> None:
    kernel_source = "({main: async function (d) { await null; return d.skip ? undefined : {twice: d.x * 2}; }})"
    async with open_kernel(kernel_source, "", heap_mib=64, max_result_bytes=1000) as kernel:
        assert msgpack.unpackb((await kernel.run(msgpack.packb({"x": 21}), 5))[0]) == {"twice": 42}
        assert (await kernel.run(msgpack.packb({"skip": True}), 5))[0] is None


async def test_kernel_throw_gives_message_and_stack() -> None:
    source = "({\n  main(d) {\n    if (d.bad) throw new Error('bad dataset ' + d.id);\n    return d.id;\n  }\n})"
    async with open_kernel(source, "", heap_mib=64, max_result_bytes=1000) as kernel:
        with pytest.raises(KernelError) as caught:
            await kernel.run(msgpack.packb({"bad": True, "id": 7}), 5)
        assert caught.value.message == "Error: bad dataset 7"
        assert "kernel.js:3" in caught.value.stack and "distribute-" not in caught.value.stack
        assert (await kernel.run(msgpack.packb({"id": 8}), 5))[0] == msgpack.packb(8)  # the kernel lives on


async def test_kernel_timeout_then_next_task_runs_with_static_reloaded() -> None:
    source = "({loadStaticDataset(t) { this.k = Number(t); }, main(d) { while (d.spin) {} return d.x * this.k; }})"
    async with open_kernel(source, "3", heap_mib=64, max_result_bytes=1000) as kernel:
        started = time.monotonic()
        with pytest.raises(KernelError, match=r"^task exceeded the time limit of 0\.3 s$"):
            await kernel.run(msgpack.packb({"spin": True}), 0.3)
        assert time.monotonic() - started < 3
        assert (await kernel.run(msgpack.packb({"x": 5}), 5))[0] == msgpack.packb(15)


async def test_kernel_fatal_oom_is_survived_and_recycled() -> None:
    source = "({main(d) { if (d.boom) return new Array(5e8).fill(0); return 'fine'; }})"
    async with open_kernel(source, "", heap_mib=64, max_result_bytes=1000) as kernel:
        with pytest.raises(KernelError, match=r"crashed.*out of memory"):
            await kernel.run(msgpack.packb({"boom": True}), 30)
        assert (await kernel.run(msgpack.packb({}), 5))[0] == msgpack.packb("fine")


async def test_kernel_heap_limit_and_bad_results() -> None:
    source = """({main(d) {
      if (d.kind === 'heap') { const a = []; while (true) a.push({x: 1}); }
      if (d.kind === 'fn') return {f() {}};
      if (d.kind === 'big') return 'y'.repeat(2000);
      return 'ok';
    }})"""
    async with open_kernel(source, "", heap_mib=64, max_result_bytes=1000) as kernel:
        with pytest.raises(KernelError, match="exceeded its memory limit of 64 MiB"):
            await kernel.run(msgpack.packb({"kind": "heap"}), 10)
        with pytest.raises(KernelError, match='result cannot be serialised: property "f" is a function'):
            await kernel.run(msgpack.packb({"kind": "fn"}), 5)
        with pytest.raises(KernelError, match="result is too large: it is 2,003 bytes, over the limit of 1,000"):
            await kernel.run(msgpack.packb({"kind": "big"}), 5)
        assert (await kernel.run(msgpack.packb({}), 5))[0] == msgpack.packb("ok")


@pytest.mark.parametrize(
    ("kernel", "expected"),
    [
        ("({main(d) { return [1, }})", "syntax error in the kernel, line 1"),
        ("({main(d) {}, loadStaticDataset(t) { JSON.parse(t); }})", "loadStaticDataset threw: SyntaxError"),
        ("({loadStaticDataset() {}})", "main is not a function"),
        ("(function () { throw new Error('nope'); })()", "threw while being evaluated: Error: nope"),
        ("({main() {}, loadStaticDataset() { while (true) {} }})", "loading the kernel timed out after 0.5 s"),
    ],
)
async def test_kernel_load_failures(kernel: str, expected: str) -> None:
    with pytest.raises(KernelError) as caught:
        async with open_kernel(kernel, "not json", heap_mib=64, max_result_bytes=1000, load_timeout=0.5):
            pass
    assert expected in caught.value.message


# --------------------------------------------------------------------------- process hygiene


def _sandbox_children() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and b"distribute.sandbox.child" in cmdline:
            found.append(int(entry.name))
    return found


def test_children_are_reaped_when_the_pool_closes() -> None:
    async def use_sandbox() -> None:
        async with open_sandbox_pool() as pool:
            assert current_pool() is pool
            async with trio.open_nursery() as nursery:  # two jobs at once: two children
                for _ in range(2):
                    nursery.start_soon(generate, SEED_GENERATOR)  # no pool passed: the current one
            assert len(_sandbox_children()) == 2  # warm children wait in the pool
            assert await generate(SEED_GENERATOR, 1) == ("array", [{"min": 0, "max": 100}], False)
            assert len(_sandbox_children()) == 2  # ... and serve the next job
        assert current_pool() is None
        assert _sandbox_children() == []
        with pytest.raises(SandboxError, match="shut down"):
            async with open_kernel(SEED_KERNEL, "{}", heap_mib=64, max_result_bytes=1000, pool=pool):
                pass

    trio.run(use_sandbox)
    assert _sandbox_children() == []


def test_without_an_open_pool_a_job_has_a_child_of_its_own() -> None:
    async def use_sandbox() -> None:
        assert current_pool() is None
        async with open_generator(SEED_GENERATOR, **LIMITS) as run:
            assert len(_sandbox_children()) == 1
            assert (await run.pull(1))[0] == [msgpack.packb({"min": 0, "max": 100})]
        assert _sandbox_children() == []

    trio.run(use_sandbox)


async def test_a_pool_passed_explicitly_is_used_and_keeps_its_limits() -> None:
    async with open_sandbox_pool(PoolLimits(max_idle=1)) as pool, open_sandbox_pool() as inner:
        assert current_pool() is inner
        async with open_kernel(SEED_KERNEL, '{"divisor": 7}', heap_mib=64, max_result_bytes=1000, pool=pool) as k:
            assert msgpack.unpackb((await k.run(msgpack.packb({"min": 1, "max": 15}), 5))[0]) == [7, 14]
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(partial(generate, SEED_GENERATOR, pool=pool))
        assert len(_sandbox_children()) == 1  # max_idle=1; the inner pool never started one


# --------------------------------------------------------------------------- upload checks (compile, never run)


@pytest.mark.parametrize(
    ("kernel", "message", "line", "column"),
    [
        ("({main(d) { return [1, }})", "SyntaxError: Unexpected token '}'", 1, 24),
        ("({\n  main(d) {\n    return [1;\n  }\n})", "SyntaxError: Unexpected token ';'", 3, 14),
        ("({main(d) {", "SyntaxError: Unexpected token ')'", 1, 12),  # V8 reads on into the wrapper's tail
    ],
)
async def test_check_kernel_reports_message_line_and_column(kernel: str, message: str, line: int, column: int) -> None:
    problem = await check_kernel(kernel, timeout=5, heap_mib=64)
    assert problem == SyntaxProblem(message, line, column)
    assert await kernel_syntax_error(kernel, timeout=5, heap_mib=64) == message  # what the API quotes


async def test_check_kernel_accepts_every_way_the_browser_does_and_runs_nothing() -> None:
    for kernel in (
        SEED_KERNEL,
        "({ main(d) { return d * 2; } });",
        "// doubles\n({ main(d) { return d * 2; } }) // end",
        "({main() { return performance.now() + new TextDecoder().decode(new Uint8Array()); }})",  # browser APIs
        "(function () { while (true) {} })()",  # compiled, never called: no timeout
    ):
        assert await check_kernel(kernel, timeout=2, heap_mib=64) is None, kernel
    # a source that closes the harness's wrapper early parses in no browser; our locator runs nothing either
    problem = await check_kernel("1}); while (true) {} (function () {", timeout=2, heap_mib=64)
    assert problem is not None and problem.message.startswith("SyntaxError") and problem.line is None
