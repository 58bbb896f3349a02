"""Settings are validated once, at startup: every absurd value fails with a SettingsError naming it."""

from __future__ import annotations

import logging
import re
from dataclasses import fields
from pathlib import Path

import pytest

from distribute.errors import SettingsError
from distribute.settings import SETTINGS, Settings, load_settings, settings_table

# environment variable, value, what the message must say (besides the setting's name)
ABSURD_ENVIRONMENT: dict[str, tuple[str, str, str]] = {
    "a negative flush interval": ("DISTRIBUTE_FLUSH_INTERVAL", "-1", "it must be greater than 0"),
    "a zero task timeout": ("DISTRIBUTE_TASK_TIMEOUT", "0", "it must be greater than 0"),
    "zero database threads": ("DISTRIBUTE_DB_THREADS", "0", "it must be greater than 0"),
    "a negative keepalive": ("DISTRIBUTE_TCP_KEEPALIVE", "-5", "it must be 0 or more"),
    "a port over 65535": ("DISTRIBUTE_PORT", "70000", "it must be from 0 to 65535"),
    "an SMTP port of 0": ("DISTRIBUTE_SMTP_PORT", "0", "it must be from 1 to 65535"),
    "more tasks per connection than a hello may ask": ("DISTRIBUTE_MAX_TASKS_PER_CONNECTION", "257", "1 to 256"),
    "a non-numeric port": ("DISTRIBUTE_PORT", "eighty", "not a valid int"),
    "a fractional integer": ("DISTRIBUTE_MAX_DATASETS", "1.5", "not a valid int"),
    "a non-numeric timeout": ("DISTRIBUTE_GENERATOR_TIMEOUT", "5s", "not a valid float"),
    "an empty number": ("DISTRIBUTE_GENERATOR_HEAP", "", "not a valid int"),
    "an infinite flush interval": ("DISTRIBUTE_FLUSH_INTERVAL", "inf", "not a finite number"),
    "an infinite heartbeat timeout": ("DISTRIBUTE_HEARTBEAT_TIMEOUT", "Infinity", "not a finite number"),
    "a NaN timeout": ("DISTRIBUTE_TASK_TIMEOUT", "nan", "not a finite number"),
    "a spot-check rate over 1": ("DISTRIBUTE_SPOT_CHECK_RATE", "1.5", "it must be from 0 to 1"),
    "a negative spot-check rate": ("DISTRIBUTE_SPOT_CHECK_RATE", "-0.1", "it must be from 0 to 1"),
    "a trust ceiling of 1": ("DISTRIBUTE_TRUST_CEILING", "1", "at least 0 and below 1"),
    "a trust ceiling over 1": ("DISTRIBUTE_TRUST_CEILING", "2.5", "at least 0 and below 1"),
    "distinct addresses neither 0 nor 1": ("DISTRIBUTE_VERIFY_DISTINCT_ADDRESSES", "2", "one of 0, 1"),
    "a negative trust threshold": ("DISTRIBUTE_TRUST_THRESHOLD", "-1", "it must be 0 or more"),
    "an unknown SMTP security": ("DISTRIBUTE_SMTP_SECURITY", "ssl", "one of starttls, tls, none"),
    "a database that is no URL": ("DISTRIBUTE_DATABASE", "distribute.db", "sqlite:///PATH"),
    "an empty host": ("DISTRIBUTE_HOST", "", "0.0.0.0 listens on every interface"),
    "a public URL without a scheme": ("DISTRIBUTE_PUBLIC_URL", "compute.example.org", "http:// or https://"),
    "a sender without an @": ("DISTRIBUTE_MAIL_FROM", "distribute", "with an @"),
}


@pytest.mark.parametrize("case", ABSURD_ENVIRONMENT)
def test_an_absurd_environment_variable_fails_naming_the_setting_and_what_it_allows(case: str) -> None:
    key, value, expected = ABSURD_ENVIRONMENT[case]
    name = key.removeprefix("DISTRIBUTE_").lower()
    with pytest.raises(SettingsError) as error:
        load_settings(environ={key: value})
    assert str(error.value).startswith(f"{name} from {key}: {value!r}")
    assert expected in str(error.value)


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "distribute.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


# file contents, what the message must say
ABSURD_FILES: dict[str, tuple[str | bytes, str]] = {
    "a string where a number belongs": ('max_datasets = "lots"', "max_datasets from {file}: 'lots' is not a valid int"),
    "a boolean where a number belongs": ("port = true", "port from {file}: expected int, got True"),
    "a fraction where an integer belongs": ("refill_batch = 1.5", "refill_batch from {file}: expected int, got 1.5"),
    "a table where a number belongs": ("flush_batch = { size = 3 }", "flush_batch from {file}: expected int"),
    "a negative number": ("max_frame_bytes = -1", "max_frame_bytes from {file}: -1 is out of range"),
    "a rate over 1": ("spot_check_rate = 5", "spot_check_rate from {file}: 5 is out of range"),
    "an infinite number": ("lease_seconds = inf", "lease_seconds from {file}: inf is not a finite number"),
    "an unknown setting": ("flush_intervall = 0.1", "unknown setting 'flush_intervall' in {file}"),
    "a section": ("[server]\nport = 80", "unknown setting 'server' in {file}"),
    "broken TOML": ("port = ", "cannot read settings file {file}: Invalid value"),
    "a duplicated setting": ("port = 1\nport = 2", "cannot read settings file {file}"),
    "a file that is not UTF-8": (b'mail_from = "caf\xe9@example.org"', "cannot read settings file {file}"),
}


@pytest.mark.parametrize("case", ABSURD_FILES)
def test_an_absurd_settings_file_fails_naming_the_file_and_the_setting(tmp_path: Path, case: str) -> None:
    text, expected = ABSURD_FILES[case]
    path = write(tmp_path, text)
    with pytest.raises(SettingsError) as error:
        load_settings(path, environ={})
    assert expected.format(file=path) in str(error.value)


def test_a_missing_settings_file_fails_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    with pytest.raises(SettingsError, match=re.escape(f"cannot read settings file {path}: ")):
        load_settings(path, environ={})


def test_a_settings_file_named_by_the_environment_is_checked_too(tmp_path: Path) -> None:
    path = write(tmp_path, "task_timeout = -3.0")
    with pytest.raises(SettingsError, match=re.escape(f"task_timeout from {path}: -3.0 is out of range")):
        load_settings(environ={"DISTRIBUTE_SETTINGS": str(path)})


def test_an_absurd_command_line_value_fails_naming_the_setting() -> None:
    with pytest.raises(SettingsError, match="port from command line: -1 is out of range"):
        load_settings(overrides={"port": -1}, environ={})


def test_an_unknown_command_line_setting_fails_naming_it() -> None:
    with pytest.raises(SettingsError, match="unknown setting 'prot'"):
        load_settings(overrides={"prot": 80}, environ={})


def test_every_default_passes_its_own_check() -> None:
    for setting in SETTINGS:
        assert setting.check(setting.default), setting.name


def test_the_table_is_derived_from_the_one_declaration() -> None:
    """`Settings` declares every setting once; the table, its order and the defaults all come from it."""
    assert [s.name for s in SETTINGS] == [f.name for f in fields(Settings)]
    defaults = load_settings(environ={})
    for setting, declared in zip(SETTINGS, fields(Settings), strict=True):
        assert getattr(defaults, setting.name) == setting.default == declared.default
        # the annotation (what type checkers see) and the default's type (what values are coerced to) agree
        assert declared.type == type(setting.default).__name__, setting.name
        assert setting.help and f"| `{setting.name}` | `{setting.default}` | {setting.unit} | {setting.help} |" in (
            settings_table()
        )


def test_every_setting_is_read_from_its_environment_variable() -> None:
    for setting in SETTINGS:
        key = f"DISTRIBUTE_{setting.name.upper()}"
        if isinstance(setting.default, str):
            value = next(
                v
                for v in (
                    setting.default + "x",
                    "http://x",
                    "tls",
                    "on",
                    "forwarded",
                    "127.0.0.1",
                    "json",
                    "debug",
                    "off",
                )
                if setting.check(v)
            )
            assert getattr(load_settings(environ={key: value}), setting.name) == value
        else:
            with pytest.raises(SettingsError, match=f"^{setting.name} from {key}: 'many' is not a valid"):
                load_settings(environ={key: "many"})


def test_the_bounds_themselves_are_allowed() -> None:
    settings = load_settings(
        environ={
            "DISTRIBUTE_SPOT_CHECK_RATE": "1",
            "DISTRIBUTE_TRUST_CEILING": "0",
            "DISTRIBUTE_PORT": "65535",
            "DISTRIBUTE_TCP_KEEPALIVE": "0",
            "DISTRIBUTE_MAX_TASKS_PER_CONNECTION": "256",
        }
    )
    assert (settings.spot_check_rate, settings.trust_ceiling, settings.port) == (1.0, 0.0, 65535)
    assert (settings.tcp_keepalive, settings.max_tasks_per_connection) == (0.0, 256)


def test_a_storage_plugins_url_scheme_is_accepted_as_the_database() -> None:
    """Storage plugins register their own schemes (docs/plugins.md); an unknown scheme is refused
    at startup by the storage registry, which lists the known ones."""
    settings = load_settings(environ={"DISTRIBUTE_DATABASE": "mysql://user@db.example/distribute"})
    assert settings.database == "mysql://user@db.example/distribute"


# An unknown DISTRIBUTE_* variable is not an error: the prefix is shared with variables that are
# no settings (DISTRIBUTE_SETTINGS, the CLI's DISTRIBUTE_TOKEN and DISTRIBUTE_SERVER, plugins' own).
# One that looks like a setting is most likely a typo, and is logged as a warning.
TYPOS = {
    "DISTRIBUTE_FLUSH_INTERVALL": "DISTRIBUTE_FLUSH_INTERVAL",
    "DISTRIBUTE_MAX_DATASET": "DISTRIBUTE_MAX_DATASETS",
    "DISTRIBUTE_port": "DISTRIBUTE_PORT",
    "DISTRIBUTE_SPOTCHECK_RATE": "DISTRIBUTE_SPOT_CHECK_RATE",
}


@pytest.mark.parametrize("typo", TYPOS)
def test_a_variable_that_looks_like_a_setting_is_warned_about_with_the_likely_name(
    typo: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="distribute.settings"):
        settings = load_settings(environ={typo: "3"})
    assert [r.getMessage() for r in caplog.records] == [
        f"{typo} is not a setting and is ignored; did you mean {TYPOS[typo]}?"
    ]
    assert settings == load_settings(environ={})


def test_variables_of_the_cli_and_of_plugins_load_without_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    environ = {
        "DISTRIBUTE_TOKEN": "secret",
        "DISTRIBUTE_SERVER": "http://127.0.0.1:8000",
        "DISTRIBUTE_LOTTERY_SEED": "42",
        "DISTRIBUTE_TEST_DATABASE": "postgres",
        "DISTRIBUTE_PORT": "9000",
    }
    with caplog.at_level(logging.WARNING, logger="distribute.settings"):
        settings = load_settings(environ=environ)
    assert settings.port == 9000
    assert caplog.records == []
