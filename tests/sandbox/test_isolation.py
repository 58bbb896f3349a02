"""A sandbox child, started exactly as the pool starts one, sees nothing of ours and reaches nothing.

The probe (tests/sandbox/probe_child.py) runs behind the same confinement as the real child: the same
`SandboxProcess.start`, command line, environment and `distribute.sandbox.confine`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from distribute.sandbox import confine
from distribute.sandbox.process import SandboxProcess

SECRET = "postgres://distribute:hunter2@db.internal/distribute"


@pytest.fixture
async def probe(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SandboxProcess]:
    monkeypatch.setenv("DISTRIBUTE_DATABASE", SECRET)
    monkeypatch.setenv("DISTRIBUTE_SMTP_PASSWORD", "smtp-secret")
    child = await SandboxProcess.start("tests.sandbox.probe_child")
    try:
        yield child
    finally:
        await child.kill()


async def ask(child: SandboxProcess, op: str, **args: Any) -> dict[str, Any]:
    return await child.call({"op": op, **args}, wall=10)


async def test_the_child_has_an_empty_environment_and_cannot_read_ours(probe: SandboxProcess) -> None:
    seen = await ask(probe, "env")
    assert not any(SECRET in value or "smtp-secret" in value for value in seen["environ"].values())
    assert "DISTRIBUTE_DATABASE" not in seen["environ"]
    assert seen["cwd"] == "/"
    if os.geteuid() == 0:  # as another user it cannot read our /proc either
        ours = await ask(probe, "read", path=f"/proc/{os.getpid()}/environ")
        assert "error" in ours, ours


async def test_the_child_cannot_open_a_socket_or_reach_a_listener(probe: SandboxProcess) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        answer = await ask(probe, "connect", port=listener.getsockname()[1])
        assert "error" in answer and not answer.get("connected"), answer
        await trio.sleep(0.2)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever arrived
    layers = probe.ready["isolation"]
    assert layers["network"].startswith("network namespace") or layers["syscalls"] == "seccomp filter", layers


async def test_the_child_cannot_run_programs(probe: SandboxProcess) -> None:
    assert probe.ready["isolation"]["syscalls"] == "seccomp filter", probe.ready["isolation"]
    answer = await ask(probe, "exec")
    assert "PermissionError" in answer["error"]


async def test_the_child_of_a_root_server_runs_as_an_unprivileged_user(probe: SandboxProcess) -> None:
    assert os.geteuid() == 0, (
        "the child changes user only under a root server: run the suite as root, as make test does"
    )
    ids = await ask(probe, "ids")
    assert ids["uid"] != 0 and ids["euid"] != 0 and ids["gid"] != 0
    assert ids["groups"] == []


async def test_the_child_has_its_rlimits(probe: SandboxProcess) -> None:
    limits = await ask(probe, "rlimits")
    assert limits["CPU"][1] <= confine.CPU_LIFETIME_SECONDS
    assert limits["NOFILE"][1] <= confine.NOFILE
    assert limits["FSIZE"][1] <= confine.FSIZE_BYTES
    assert limits["CORE"] == [0, 0]
    assert limits["NPROC"][1] != -1  # RLIM_INFINITY


async def test_the_real_child_reports_the_same_layers() -> None:
    child = await SandboxProcess.start()
    try:
        layers = child.ready["isolation"]
    finally:
        await child.kill()
    assert set(layers) >= {"rlimits", "network", "syscalls", "uid", "gid", "v8_flags"}
    if os.geteuid() == 0:
        assert layers["uid"] != 0
