"""Child process of the JavaScript sandbox: runs untrusted generators and kernels in mini-racer.

Started by `distribute.sandbox.process` behind `distribute.sandbox.confine`, which confines the process,
imports this module, calls `prepare` (V8 starts there, with the server's rights) and then `main`. It caps
its data segment (RLIMIT_DATA) *before* mini-racer is imported, so a runaway typed array fails inside JS with a
RangeError and a fatal V8 out-of-memory kills only this process. Requests and replies are
length-prefixed (4-byte big-endian) msgpack maps on stdin/stdout, one reply per request. Each job
(one generator run or one kernel) gets a fresh `MiniRacer()`; no Python callback is ever exposed to
JS. Values cross the V8 boundary as one JSON string per call (a whole batch of datasets at a time),
checked inside V8 by a strict replacer and re-encoded here as msgpack.

The one exception to "one reply per request": a ``run`` that asks for ``notes`` may be preceded by
note frames, ``{"note": "progress", "f": x}`` and ``{"note": "checkpoint", "state": msgpack}``, from
the kernel's ctx.progress and ctx.checkpoint. They come from a `distribute.sandbox.mailbox.Mailbox`,
a SharedArrayBuffer the prelude made for the job before any owner code ran: the kernel runs on a thread
of this process while the main thread reads the buffer (bounded, re-checked, paced) and writes the
notes, all before the reply. Still no Python is callable from JS: mini-racer's `wrap_py_function`
would expose an async Python function, but its Python side reads the call's arguments through the
isolate, so a long synchronous kernel's calls would only arrive after it returned.

V8 runs with its JIT compilers unless the pool asks for ``--jitless`` (measured in BENCHMARKS.md, "V8
without its JIT"): most V8 exploits go through the JIT, but jitless V8 has no WebAssembly.

Nothing the child sends is trusted by the parent: it re-checks counts and sizes and caps every frame.

The JavaScript side of every job is the prelude, `prelude.js` beside this module (package data, read
with importlib.resources), installed in each fresh isolate as `__d`.

Ops: ``gen`` (evaluate a generator and call its main), ``pull``, ``skip``, ``kernel`` (evaluate a
kernel and call loadStaticDataset; with ``checkpoint_max_bytes``, ``checkpoint_interval`` and
``progress`` it gets a mailbox), ``run`` (one task), ``end`` (drop the job), ``check`` (compile a
kernel, or with ``"what": "generator"`` a generator, without running it: ``{"ok": True, "error": None |
{"message", "line", "column"}}``).
Failures come back as ``{"ok": False, "kind": ..., "message": ...}`` with an owner-readable message.
"""

from __future__ import annotations

import resource

# Set before mini-racer is imported: V8 reserves its address space when it initialises. The soft limit
# is re-tuned per job (`_set_data_limit`) because 768 MiB only leaves room for a ~100 MiB V8 heap.
BASE_DATA_MIB = 768
resource.setrlimit(resource.RLIMIT_DATA, (BASE_DATA_MIB << 20, resource.getrlimit(resource.RLIMIT_DATA)[1]))

import importlib.resources  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from concurrent.futures import ThreadPoolExecutor, wait  # noqa: E402
from typing import Any, BinaryIO  # noqa: E402

import msgpack  # noqa: E402
from py_mini_racer import (  # noqa: E402
    DEFAULT_V8_FLAGS,
    JSEvalException,
    JSOOMException,
    JSParseException,
    JSPromise,
    JSTimeoutException,
    MiniRacer,
    init_mini_racer,
)

from .confine import applied, renew_cpu_limit  # noqa: E402
from .mailbox import MAILBOX_DATA, POLL_SECONDS, Mailbox, Note  # noqa: E402

__all__ = ["BASE_DATA_MIB", "PRELUDE", "data_limit_mib", "data_mib", "main", "prepare"]

PRELUDE = importlib.resources.files("distribute.sandbox").joinpath("prelude.js").read_text("utf-8")
MAX_MESSAGE = 16 * 1024  # longest failure message sent back (an owner may throw a huge string)

_HEADER = struct.Struct(">I")
RECYCLE_ABOVE_MIB = 128  # growth over the fresh child's footprint that makes it ask to be replaced


def data_mib() -> int:
    """This process's private writable memory (what RLIMIT_DATA counts), in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmData:"):
                return int(line.split()[1]) >> 10
    return 0


def data_limit_mib(heap_mib: int, current_mib: int) -> int:
    """RLIMIT_DATA for a job. Measured: an idle isolate already holds ~570 MiB of private writable
    memory, and V8's collector needs about twice the heap limit on top, otherwise a heap blow-up is a
    fatal V8 OOM instead of a clean JSOOMException. V8 keeps pages of closed isolates, so the limit
    is relative to what the process holds now."""
    return max(BASE_DATA_MIB, current_mib + 72 + 2 * heap_mib)


_CALL_TAG = "\n//# sourceURL=distribute-call.js"
# A kernel exactly as the browser harness wraps it (embed/src/blob.js): the upload check compiles this.
_KERNEL_HEAD, _KERNEL_TAIL = "var kernel =\n", "\n;\nreturn kernel;\n"
# Locating a syntax error means handing V8 a whole script; one that parses stops at this first
# statement, so nothing of the owner's code runs even if their source closes our wrapper early.
_GUARD = "throw 0;"
_INTERNAL_FRAME = re.compile(r"distribute-(prelude|call)\.js|^\s*at <anonymous>")
JSON_PER_MSGPACK_BYTE = 6  # JSON text is at most ~6x its msgpack ("\u0001" is 6 chars, 1 byte)
MAX_STACK = 16 * 1024
_runner: ThreadPoolExecutor | None = None  # runs a kernel while the main thread reads its mailbox


# --------------------------------------------------------------------------- conversions


def _fit_ints(value: Any) -> Any:
    """JSON integers beyond 64 bits (JS prints 1e20 as digits) become floats, as they were in JS."""
    if isinstance(value, int) and not -(1 << 63) <= value < (1 << 64):
        return float(value)
    if isinstance(value, list):
        return [_fit_ints(v) for v in value]
    if isinstance(value, dict):
        return {k: _fit_ints(v) for k, v in value.items()}
    return value


def _pack(value: Any) -> bytes:
    packed: bytes
    try:
        packed = msgpack.packb(value)
    except OverflowError:
        packed = msgpack.packb(_fit_ints(value))
    return packed


def _trim_stack(stack: str) -> str:
    lines = [line for line in stack.splitlines() if not _INTERNAL_FRAME.search(line)]
    return "\n".join(lines)[:MAX_STACK]


class ParseError:
    """Where V8's parser stopped in a text: its message, the line (1-based), the caret (0-based) and that line."""

    def __init__(self, message: str, line: int, caret: int | None, source: str) -> None:
        self.message, self.line, self.caret, self.source = message, line, caret, source

    def describe(self) -> str:
        """'line N: message' plus the offending line with a caret under the column."""
        text = f"line {self.line}: {self.message}"
        if self.caret is not None:
            start = max(0, self.caret - 60)
            text += f"\n    {self.source[start : start + 120]}\n    {' ' * (self.caret - start)}^"
        return text


def parse_error(mr: MiniRacer, prefix: str, text: str, suffix: str) -> ParseError | None:
    """Parse (never run) `prefix + text + suffix`: where it fails, in lines of `prefix + text`, or None.

    `prefix` must not contain a line break; a caret on the first line is moved past it.
    """
    try:
        mr.eval(_GUARD + prefix + text + suffix, timeout_sec=5)
    except JSParseException as exc:
        lines = str(exc).split("\n")
        match = re.match(r"<anonymous>:(\d+): (.*)", lines[0])
        if not match:
            return ParseError(lines[0], 1, None, "")
        line, source, caret = int(match.group(1)), "", None
        if len(lines) >= 3 and "^" in lines[2]:
            source, caret = lines[1], lines[2].index("^")
            if line == 1:  # our prefix sits on the first line
                cut = len(_GUARD + prefix)
                source, caret = source[cut:], max(0, caret - cut)
        return ParseError(match.group(2), line, caret, source)
    except JSEvalException:  # it parsed (and stopped at the guard), or took too long
        pass
    return None


def _fail(kind: str, message: str, stack: str = "", **extra: Any) -> dict[str, Any]:
    return {"ok": False, "kind": kind, "message": message[:MAX_MESSAGE], "stack": stack[:MAX_STACK], **extra}


def _set_data_limit(heap_mib: int) -> None:
    hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
    soft = data_limit_mib(heap_mib, data_mib()) << 20
    resource.setrlimit(resource.RLIMIT_DATA, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))


# --------------------------------------------------------------------------- one job


class Job:
    """One generator run or one kernel: a fresh isolate with the prelude and the heap limit."""

    def __init__(self, what: str, source: str, heap_mib: int, max_bytes: int) -> None:
        self.what = what  # "generator" or "kernel": used in messages
        self.source = source
        self.heap_mib = heap_mib
        self.max_bytes = max_bytes  # largest dataset (generator) or result (kernel), msgpack
        self.max_json = JSON_PER_MSGPACK_BYTE * max_bytes  # JSON longer than this is surely over max_bytes
        self.mailbox: Mailbox | None = None
        _set_data_limit(heap_mib)
        self.mr = MiniRacer()
        self.mr.set_hard_memory_limit(heap_mib << 20)
        self.mr.eval(PRELUDE)

    def start(self, code: str, timeout: float) -> str:
        """The job's first call; the isolate is closed if it fails."""
        try:
            return self.call(code, timeout)[1]
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.mailbox is not None:
            self.mailbox.close()
            self.mailbox = None
        self.mr.close()

    def open_mailbox(self, limit: int, interval: float, progress: bool) -> None:
        """Give this isolate's kernel a mailbox; called before any owner code runs in it."""
        view = self.mr.eval(f"__d.mailbox({int(limit)})")
        if not isinstance(view, memoryview) or len(view) != MAILBOX_DATA + limit:
            raise _Stop(_fail("internal", "the sandbox harness made no mailbox", reset=True))
        self.mailbox = Mailbox(view, limit, interval, progress)

    def _evaluate(self, code: str, timeout: float) -> Any:
        started = time.monotonic()
        value = self.mr.eval(code + _CALL_TAG, timeout_sec=timeout)
        if isinstance(value, JSPromise):  # an async kernel: wait for it on the same budget
            value = value.get(timeout=max(0.001, timeout - (time.monotonic() - started)))
        return value

    def _evaluate_reading_notes(self, code: str, timeout: float, emit: Callable[[Note], None]) -> Any:
        """`_evaluate` on another thread while this one reads the mailbox; notes go out before the reply."""
        global _runner
        assert self.mailbox is not None
        if _runner is None:
            _runner = ThreadPoolExecutor(1, thread_name_prefix="kernel")
        self.mailbox.start()
        running = _runner.submit(self._evaluate, code, timeout)
        while not wait([running], timeout=POLL_SECONDS).done:
            for note in self.mailbox.poll(time.monotonic()):
                emit(note)
        return running.result()

    def call(self, code: str, timeout: float, emit: Callable[[Note], None] | None = None) -> tuple[str, str]:
        """Evaluate a prelude call; returns (status char, payload) or raises _Stop with a failure.

        With `emit` (a kernel's task, when the job has a mailbox) its progress and checkpoints are
        passed to `emit` while it runs.
        """
        try:
            if emit is not None and self.mailbox is not None:
                value = self._evaluate_reading_notes(code, timeout, emit)
            else:
                value = self._evaluate(code, timeout)
        except JSTimeoutException:
            raise _Stop(_fail("timeout", "", reset=True, heap_used_mib=self._heap_used_mib())) from None
        except JSOOMException:
            raise _Stop(_fail("memory", self._memory_message(), reset=True)) from None
        except JSEvalException as exc:
            if self.mr.was_hard_memory_limit_reached():
                raise _Stop(_fail("memory", self._memory_message(), reset=True)) from None
            raise _Stop(_fail("internal", f"the {self.what} was stopped: {str(exc)[:500]}", reset=True)) from None
        if not isinstance(value, str) or not value:
            raise _Stop(_fail("internal", f"the {self.what} replaced the sandbox harness", reset=True))
        if value[0] == "E":
            raise _Stop(self._js_error(json.loads(value[1:])))
        return value[0], value[1:]

    def _heap_used_mib(self) -> int:
        """Reported with a timeout: a heap near its limit means the time went into garbage collection."""
        try:
            return int(self.mr.heap_stats()["used_heap_size"]) >> 20
        except (JSEvalException, KeyError, TypeError, ValueError):
            return 0

    def _memory_message(self) -> str:
        return f"the {self.what} exceeded its memory limit of {self.heap_mib} MiB"

    def _js_error(self, err: dict[str, Any]) -> dict[str, Any]:
        kind, message, stack = err["kind"], err.get("message", ""), _trim_stack(err.get("stack", ""))
        if kind == "syntax":
            form = err.get("form") == "expression"
            return _fail("syntax", f"syntax error in the {self.what}, {self._locate_syntax_error(form)}", reset=True)
        if "allocation failed" in message or "Invalid array length" in message:
            message += " (the sandbox ran out of memory)"
        extra = {key: err[key] for key in ("index", "count", "size", "json") if key in err}
        return _fail(kind, message, stack, **extra)

    def _locate_syntax_error(self, expression: bool) -> str:
        # The source sits inside a function expression, on the same lines, so V8's line numbers are the owner's.
        prefix, suffix = ("(function(){return(", "\n)})") if expression else ("(function(){", "\n})")
        error = parse_error(self.mr, prefix, self.source, suffix)
        return error.describe() if error is not None else "it does not parse as a JavaScript expression"


class _Stop(Exception):
    """A job step failed; carries the reply to send."""

    def __init__(self, reply: dict[str, Any]) -> None:
        super().__init__(reply.get("message"))
        self.reply = reply


# --------------------------------------------------------------------------- request handlers


def _gen_open(req: dict[str, Any]) -> tuple[Job, dict[str, Any]]:
    job = Job("generator", req["source"], req["heap_mib"], req["max_dataset_bytes"])
    payload = job.start(f"__d.genOpen({json.dumps(job.source)}, {int(req['max_datasets'])})", req["timeout"])
    return job, {"ok": True, **json.loads(payload)}


def _gen_pull(job: Job, req: dict[str, Any]) -> dict[str, Any]:
    budget_ms = int(req["timeout"] * 500)  # stop a batch at half the wall clock: slow items shrink batches
    n = int(req["n"])
    call = f"__d.pull({n}, {budget_ms}, {job.max_json}, {int(req['batch_json'])})"
    _, payload = job.call(call, req["timeout"])
    batch = json.loads(payload)
    if not isinstance(batch, dict) or not isinstance(batch.get("items"), list) or len(batch["items"]) > n:
        raise _Stop(_fail("internal", "the generator replaced the sandbox harness", reset=True))
    items, first = [], req["produced"]
    for offset, item in enumerate(batch["items"]):
        try:
            data = _pack(item)
        except (ValueError, TypeError) as exc:  # e.g. an object key with a lone surrogate
            raise _Stop(_fail("serialise", f"{type(exc).__name__}: {exc}", index=first + offset, reset=True)) from None
        if len(data) > job.max_bytes:
            raise _Stop(_fail("size", "", index=first + offset, size=len(data), reset=True))
        items.append(data)
    return {"ok": True, "items": items, "done": batch["done"]}


def _gen_skip(job: Job, req: dict[str, Any]) -> dict[str, Any]:
    budget_ms = int(req["timeout"] * 500)
    _, payload = job.call(f"__d.skip({int(req['n'])}, {budget_ms})", req["timeout"])
    return {"ok": True, **json.loads(payload)}


def _kernel_open(req: dict[str, Any]) -> tuple[Job, dict[str, Any]]:
    job = Job("kernel", req["kernel"], req["heap_mib"], req["max_result_bytes"])
    limit, progress = int(req.get("checkpoint_max_bytes") or 0), bool(req.get("progress"))
    if limit or progress:
        try:
            job.open_mailbox(limit, float(req.get("checkpoint_interval") or 0), progress)
        except BaseException:
            job.close()
            raise
    job.start(f"__d.kernelOpen({json.dumps(job.source)}, {json.dumps(req['static'])})", req["timeout"])
    return job, {"ok": True}


def _kernel_run(job: Job, req: dict[str, Any], emit: Callable[[Note], None] | None) -> dict[str, Any]:
    try:
        text = json.dumps(msgpack.unpackb(req["dataset"]), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (ValueError, TypeError) as exc:
        return _fail("dataset", f"the dataset cannot be passed to the kernel: {exc}")
    call = f"__d.run({json.dumps(text, ensure_ascii=False)})"
    if req.get("resume") is not None:  # a reissued task: its last checkpoint becomes ctx.resume
        try:
            resume = json.dumps(msgpack.unpackb(req["resume"]), ensure_ascii=False, allow_nan=False)
        except (ValueError, TypeError) as exc:
            return _fail("dataset", f"the checkpoint cannot be passed to the kernel: {exc}")
        call = f"__d.run({json.dumps(text, ensure_ascii=False)}, {json.dumps(resume, ensure_ascii=False)})"
    started = time.perf_counter()
    status, payload = job.call(call, req["timeout"], emit)
    ms = (time.perf_counter() - started) * 1000.0
    if status == "N":
        return {"ok": True, "value": None, "ms": ms}
    if len(payload) > job.max_json:
        return _fail("size", "", size=len(payload), json=True, ms=ms)
    try:
        value = _pack(json.loads(payload))
    except (ValueError, TypeError) as exc:
        return _fail("serialise", f"{type(exc).__name__}: {exc}", ms=ms)
    if len(value) > job.max_bytes:
        return _fail("size", "", size=len(value), ms=ms)
    return {"ok": True, "value": value, "ms": ms}


def _check(req: dict[str, Any]) -> dict[str, Any]:
    """Compile a kernel as the browser harness wraps it, without running it; locate a syntax error."""
    job = Job("kernel", req["source"], req["heap_mib"], 0)
    try:
        body = _KERNEL_HEAD + job.source + _KERNEL_TAIL
        _, payload = job.call(f"__d.compiles({json.dumps(body)})", req["timeout"])
        message = json.loads(payload)["error"]
        if message is None:
            return {"ok": True, "error": None}
        line, column = _kernel_position(job.source, parse_error(job.mr, "(function(){", body, "\n})"))
        return {"ok": True, "error": {"message": message, "line": line, "column": column}}
    except _Stop as stop:  # a throwaway isolate: nothing to reset
        return {**stop.reply, "reset": False}
    finally:
        job.close()


def _check_generator(req: dict[str, Any]) -> dict[str, Any]:
    """Parse a generator as the prelude loads it (a script, else one expression), never running it."""
    job = Job("generator", req["source"], req["heap_mib"], 0)
    try:
        script, expression = ("(function(){", "\n})"), ("(function(){return(", "\n)})")
        if parse_error(job.mr, script[0], job.source, script[1]) is None:
            return {"ok": True, "error": None}
        if parse_error(job.mr, expression[0], job.source, expression[1]) is None:
            return {"ok": True, "error": None}
        prefix, suffix = expression if job.source.lstrip().startswith("{") else script  # as the prelude words it
        error = parse_error(job.mr, prefix, job.source, suffix)
        if error is None:
            return {"ok": True, "error": None}
        column = None if error.caret is None else error.caret + 1
        message = f"syntax error in the generator, {error.describe()}"
        return {"ok": True, "error": {"message": message, "line": error.line, "column": column}}
    finally:
        job.close()


def _kernel_position(kernel: str, error: ParseError | None) -> tuple[int | None, int | None]:
    """A parse error in the wrapped kernel as (line, column) of the kernel itself, both 1-based."""
    if error is None:  # the source closes the wrapper early: the browser's parse fails, ours found no spot
        return None, None
    lines = kernel.split("\n")
    line = error.line - _KERNEL_HEAD.count("\n")
    if line > len(lines):  # in the wrapper's tail, e.g. an unclosed bracket: the end of the kernel
        return len(lines), len(lines[-1]) + 1
    if line < 1:
        return 1, None
    return line, None if error.caret is None else error.caret + 1


# --------------------------------------------------------------------------- main loop


def _read_frame(stream: BinaryIO) -> dict[str, Any] | None:
    header = stream.read(4)
    if len(header) < 4:
        return None
    request: dict[str, Any] = msgpack.unpackb(stream.read(_HEADER.unpack(header)[0]))
    return request


def _write_frame(stream: BinaryIO, message: dict[str, Any]) -> None:
    body = msgpack.packb(message)
    stream.write(_HEADER.pack(len(body)) + body)
    stream.flush()


def prepare(config: dict[str, Any]) -> None:
    """Start V8 (before `distribute.sandbox.confine` drops our rights: it reads its library and ICU data)."""
    flags = (*DEFAULT_V8_FLAGS, "--jitless") if config.get("jitless") else DEFAULT_V8_FLAGS
    init_mini_racer(flags=flags)
    applied["v8_flags"] = list(flags)
    MiniRacer().close()  # initialise V8 now, not inside the first job's time limit


def main() -> None:
    # Frames go to a private copy of stdout; fd 1 itself points at stderr so a stray print (ours or
    # a library's) cannot corrupt the stream.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    inp = sys.stdin.buffer
    baseline = data_mib()
    _write_frame(out, {"ok": True, "ready": True, "pid": os.getpid(), "data_mib": baseline, "isolation": applied})
    job: Job | None = None
    while (req := _read_frame(inp)) is not None:
        op = req.get("op")
        renew_cpu_limit(2 * float(req.get("timeout", 5)) + 30)  # far beyond the parent's wall clock
        try:
            if op in ("gen", "kernel", "end") and job is not None:
                job.close()
                job = None
            if op == "gen":
                job, reply = _gen_open(req)
            elif op == "kernel":
                job, reply = _kernel_open(req)
            elif op == "check":  # needs no job: a throwaway isolate
                reply = _check_generator(req) if req.get("what") == "generator" else _check(req)
            elif op == "end":  # a child bloated by a big job is better replaced than reused
                reply = {"ok": True, "recycle": data_mib() > baseline + RECYCLE_ABOVE_MIB}
            elif job is None:
                reply = _fail("internal", f"no job open for {op!r}")
            elif op == "pull":
                reply = _gen_pull(job, req)
            elif op == "skip":
                reply = _gen_skip(job, req)
            elif op == "run":
                reply = _kernel_run(job, req, (lambda note: _write_frame(out, note)) if req.get("notes") else None)
            else:
                reply = _fail("internal", f"unknown op {op!r}")
        except _Stop as stop:
            reply = stop.reply
        except MemoryError:
            reply = _fail("memory", "the sandbox ran out of memory", reset=True)
        except Exception as exc:  # a harness bug must not kill the child silently: report it
            reply = _fail("internal", f"sandbox error: {type(exc).__name__}: {exc}", reset=True)
        if not reply["ok"] and reply.get("reset") and job is not None:
            job.close()  # its isolate is in an unknown state: the parent reloads or gives up
            job = None
        _write_frame(out, reply)
