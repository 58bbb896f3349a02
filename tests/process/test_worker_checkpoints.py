"""`distribute worker` processes send their kernels' progress and checkpoints while a task runs.

A checkpointing kernel on a real worker process is SIGKILLed (with its sandbox child: the machine
is gone) at about 60 % of its one long task; another worker process gets the task with its latest
checkpoint and finishes it from there, with the exact result. Progress reaches the server in real time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import msgpack
import trio

from tests.conftest import StartServer

N = 1_000_000_000  # ~6 s of JavaScript on this machine, in 50 steps
MODULUS = 1_000_000_007
# The sum of 0..n-1 modulo a prime, one number at a time; its state at a step is (i, sum so far).
KERNEL = """({ main: function (d, ctx) {
  var i = ctx.resume ? ctx.resume.i : 0, acc = ctx.resume ? ctx.resume.acc : 0, start = i;
  for (; i < d.n; i++) {
    if (i % d.step === 0) { ctx.progress(i / d.n); ctx.checkpoint({ i: i, acc: acc }); }
    acc = (acc + i) % MODULUS;
  }
  return { acc: acc, start: start };
} })""".replace("MODULUS", str(MODULUS))
GENERATOR = f"({{ main: function () {{ return [{{ n: {N}, step: {N // 50} }}]; }} }})"


def worker_command(url: str, campaign_id: int) -> list[str]:
    options = ["--campaign", str(campaign_id), "--processes", "1", "--tasks", "1", "--quiet"]
    return [sys.executable, "-m", "distribute", "worker", "--server", url, *options]


def children(pid: int) -> list[int]:
    """The processes `pid` started (its sandbox children)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


async def test_a_killed_workers_task_finishes_on_another_worker_from_its_checkpoint(start_server: StartServer) -> None:
    server = await start_server(checkpoint_interval=0.5)
    campaign_id = await server.create_campaign(kernel=KERNEL, generator=GENERATOR, static="", task_timeout=600)
    checkpoints = server.platform.dispatcher.checkpoints
    first = subprocess.Popen(worker_command(server.url, campaign_id), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sandbox: list[int] = []
    try:
        with trio.fail_after(120):
            while not (shown := server.platform.tasks_in_progress(campaign_id))["each"] or shown["each"][0] < 0.6:
                assert first.poll() is None, first.communicate()
                await trio.sleep(0.02)
            sandbox = children(first.pid)
            first.send_signal(signal.SIGKILL)
            for pid in sandbox:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await trio.to_thread.run_sync(first.wait)
            while server.platform.tasks_in_progress(campaign_id)["tasks"]:  # the server saw the connection end
                await trio.sleep(0.02)
        ((task, state),) = checkpoints.latest.items()
        saved = msgpack.unpackb(state)
        with trio.fail_after(120):
            second = await trio.run_process(
                worker_command(server.url, campaign_id), capture_stdout=True, capture_stderr=True, check=False
            )
        assert second.returncode == 0, second.stderr.decode()
        await server.wait_complete(campaign_id)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    (row,) = await server.results(campaign_id)
    assert row["dataset_id"] == task
    assert 0 < saved["i"] < N  # checkpointed on the way, and the second worker started there:
    assert row["result"] == {"acc": (N * (N - 1) // 2) % MODULUS, "start": saved["i"]}


async def test_progress_of_a_headless_workers_task_shows_in_tasks_in_progress(start_server: StartServer) -> None:
    server = await start_server()
    campaign_id = await server.create_campaign(kernel=KERNEL, generator=GENERATOR, static="", task_timeout=600)
    worker = await trio.lowlevel.open_process(worker_command(server.url, campaign_id))
    seen: set[float] = set()
    try:
        with trio.fail_after(120):
            while len(seen) < 3:
                shown = server.platform.tasks_in_progress(campaign_id)
                seen.update(fraction for fraction in shown["each"] if fraction > 0)
                await trio.sleep(0.02)
    finally:
        sandbox = children(worker.pid)
        worker.kill()
        for pid in sandbox:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await worker.wait()
    assert all(0 < fraction < 1 for fraction in seen)
