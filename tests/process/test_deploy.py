"""deploy/: the systemd units pass `systemd-analyze verify`, and the public settings file is a real one.

`systemd-analyze verify` needs each unit's ExecStart binary to exist, so the units are checked as
copies whose /opt/distribute/bin/distribute is this checkout's `distribute` (the only change). The
test fails, never skips, when systemd-analyze is missing: `make test` installs Debian's `systemd`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest

from distribute.cli import _parser
from distribute.limits import connection_cap
from distribute.settings import SETTINGS, load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNITS = {"serve": DEPLOY / "distribute-serve@.service", "worker": DEPLOY / "distribute-worker@.service"}
INSTALLED_BINARY = "/opt/distribute/bin/distribute"  # where docs/deploy.md installs it
PUBLIC = DEPLOY / "public.toml"


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    assert found, "systemd-analyze is missing: install Debian's systemd package (make test does)"
    return found


def installed_copy(unit: Path, folder: Path) -> Path:
    """The unit as installed, its binary pointing at this checkout's `distribute`."""
    here = Path(sys.executable).with_name("distribute")
    assert here.exists(), here
    text = unit.read_text()
    assert INSTALLED_BINARY in text
    copy = folder / unit.name
    copy.write_text(text.replace(INSTALLED_BINARY, str(here)))
    return copy


def directive(unit: Path, name: str) -> str:
    values = re.findall(rf"^{name}=(.*)$", unit.read_text(), re.MULTILINE)
    assert len(values) == 1, f"{unit.name} should set {name} once"
    return values[0].strip()


@pytest.mark.parametrize("kind", sorted(UNITS))
def test_the_unit_passes_systemd_analyze_verify_without_a_warning(kind: str, tmp_path: Path) -> None:
    copy = installed_copy(UNITS[kind], tmp_path)
    instance = copy.with_name(copy.name.replace("@", "@8001"))  # verify checks an instance of a template
    checked = subprocess.run(
        [systemd_analyze(), "verify", "--man=no", str(instance)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0 and checked.stdout + checked.stderr == "", checked.stdout + checked.stderr


@pytest.mark.parametrize("kind", sorted(UNITS))
def test_the_units_hardening_keeps_its_exposure_at_most_5_of_10(kind: str, tmp_path: Path) -> None:
    copy = installed_copy(UNITS[kind], tmp_path)
    instance = copy.with_name(copy.name.replace("@", "@4"))
    scored = subprocess.run(
        [systemd_analyze(), "security", "--offline=yes", "--threshold=50", str(instance)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert scored.returncode == 0, scored.stdout[-2000:] + scored.stderr


@pytest.mark.parametrize("kind", sorted(UNITS))
def test_the_unit_leaves_the_sandbox_its_namespaces_and_seccomp(kind: str) -> None:
    """Each sandbox child unshares a user and a network namespace and installs its own seccomp
    filter (distribute/sandbox/confine.py): no directive of the unit may take that away."""
    text = UNITS[kind].read_text()
    for forbidding in ("RestrictNamespaces", "PrivateUsers", "SystemCallFilter", "MemoryDenyWriteExecute"):
        assert not re.search(rf"^{forbidding}=", text, re.MULTILINE), forbidding
    assert directive(UNITS[kind], "NoNewPrivileges") == "yes" and directive(UNITS[kind], "ProtectSystem") == "strict"


@pytest.mark.parametrize("kind", ["serve", "worker"])
def test_the_units_command_line_is_one_distribute_accepts(kind: str) -> None:
    command = shlex.split(directive(UNITS[kind], "ExecStart").replace("%i", "8001"))
    assert command[0] == INSTALLED_BINARY
    parsed = _parser().parse_args(command[1:])  # argparse exits on an unknown option
    assert parsed.command == kind


def test_the_serve_units_open_files_limit_leaves_room_for_max_connections() -> None:
    limit = int(directive(UNITS["serve"], "LimitNOFILE"))
    wanted = load_settings(PUBLIC, environ={}).max_connections
    assert connection_cap(wanted, limit) == wanted  # not lowered at start: the file says what runs


def test_the_public_settings_load_through_the_real_loader_and_each_name_is_a_setting() -> None:
    raw = tomllib.loads(PUBLIC.read_text())
    loaded = load_settings(PUBLIC, environ={})
    names = {s.name for s in SETTINGS}
    assert raw.keys() <= names
    for name, value in raw.items():
        assert getattr(loaded, name) == value, name
    assert loaded.smtp_host and loaded.public_url.startswith("https://")  # mail links need public_url
    assert loaded.log_format == "json" and loaded.email_verification == "on"
    assert "database" not in raw and "smtp_password" not in raw  # secrets live in secrets.env


def test_every_setting_in_the_public_file_says_why_in_a_comment() -> None:
    for line in PUBLIC.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert re.match(r"^\w+ = .+ {2,}# \S", line), f"uncommented: {line!r}"


def test_a_server_starts_with_the_public_settings_and_writes_json_logs(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "DISTRIBUTE_SETTINGS": str(PUBLIC),
        "DISTRIBUTE_DATABASE": f"sqlite:///{tmp_path / 'd.db'}",
        "DISTRIBUTE_PUBLIC_URL": "http://127.0.0.1",  # the Origin check then needs no TLS in front
    }
    log = tmp_path / "stderr.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "distribute", "serve", "--port", "0"], stdout=subprocess.PIPE, stderr=sink, env=env
        )
    assert process.stdout is not None
    try:
        first = process.stdout.readline().decode()
        assert first.startswith("distribute serving on "), log.read_text()
        health = httpx.get(first.split()[3].rstrip(",") + "/-/health", timeout=30)
        assert health.status_code == 200 and health.json()["ok"] is True
    finally:
        process.terminate()
        process.wait(timeout=30)
    lines = log.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert records and all(r["level"] for r in records)
    answered = [(r["path"], r["status"]) for r in records if r["logger"] == "hypercorn.access" and r["status"]]
    assert answered == [("/-/health", 200)]
