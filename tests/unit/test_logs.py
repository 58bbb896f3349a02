"""The log formats, the ids they carry and the redaction of secrets (distribute/logs.py), without a server."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from distribute.logs import CONNECTION_ID, REQUEST_ID, configure_logging, redact, request_id
from distribute.settings import load_settings


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, logging.Logger]]:
    """The root handler configure_logging installs, writing to a buffer; removed after the test."""
    stream = io.StringIO()
    settings = load_settings(
        overrides={
            "log_format": "json",
            "smtp_password": "hunter2-smtp",
            "database": "postgres://distribute:s3cret-db@db.internal:5432/distribute",
        },
        environ={},
    )
    root = logging.getLogger()
    level = root.level
    handler = configure_logging(settings, stream)
    try:
        yield stream, logging.getLogger("distribute.test")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer dst_abcDEF123-_x", "dst_abcDEF123-_x"),
        ("header authorization=Basic YWxpY2U6cGFzcw==", "YWxpY2U6cGFzcw=="),
        ("made token dst_Zq9-_Zq9 for alice", "Zq9-_Zq9"),
        ("opening postgres://distribute:pa55word@db:5432/d", "pa55word"),
        ("GET https://compute.example.org/reset/Abc_123-xyz HTTP/1.1", "Abc_123-xyz"),
        ("link /verify/V3r1fy-T0ken?x=1", "V3r1fy-T0ken"),
        ("Cookie: __Host-distribute_session=sess-value-1; other=2", "sess-value-1"),
        ("form {'email': 'a@b.c', 'password': 'correct horse'}", "correct"),
        ("password2=battery-staple&next=/", "battery-staple"),
        ('{"csrf": "tok-en-value"}', "tok-en-value"),
    ],
)
def test_redact_masks_each_kind_of_secret(text: str, secret: str) -> None:
    masked = redact(text)
    assert secret not in masked and "***" in masked


def test_redact_keeps_ordinary_text() -> None:
    text = "campaign 3 paused: 18 of 20 tasks failed (kernel error at /api/campaigns/3)"
    assert redact(text) == text


def test_a_short_plain_request_id_from_a_trusted_peer_is_kept_and_anything_else_replaced() -> None:
    assert request_id("nginx-7f3a.01", trusted=True) == "nginx-7f3a.01"
    assert request_id("nginx-7f3a.01", trusted=False) != "nginx-7f3a.01"
    for bad in ("x" * 65, "two words", "line\nbreak", 'quote"d', ""):
        made = request_id(bad, trusted=True)
        assert made != bad and len(made) == 16 and made.isalnum()


def test_a_json_line_carries_the_ids_of_its_context(captured: tuple[io.StringIO, logging.Logger]) -> None:
    stream, log = captured
    request, connection = REQUEST_ID.set("req-1"), CONNECTION_ID.set("42")
    try:
        log.info("inside %s", "both")
    finally:
        REQUEST_ID.reset(request)
        CONNECTION_ID.reset(connection)
    log.info("outside")
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (inside["request_id"], inside["connection_id"], inside["message"]) == ("req-1", "42", "inside both")
    assert inside["logger"] == "distribute.test" and inside["level"] == "info" and inside["time"].endswith("+00:00")
    assert "request_id" not in outside and "connection_id" not in outside


def test_the_configured_secrets_are_masked_even_in_a_traceback(captured: tuple[io.StringIO, logging.Logger]) -> None:
    stream, log = captured
    try:
        raise RuntimeError("cannot log in to smtp with hunter2-smtp; db said s3cret-db")
    except RuntimeError:
        log.exception("mail failed for %s", "hunter2-smtp")
    written = stream.getvalue()
    (record,) = (json.loads(line) for line in written.splitlines())
    assert "hunter2-smtp" not in written and "s3cret-db" not in written
    assert "RuntimeError" in record["exception"] and record["message"] == "mail failed for ***"


def test_text_lines_name_the_request_they_belong_to() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = configure_logging(load_settings(environ={}), stream)
    token = REQUEST_ID.set("abc123")
    try:
        logging.getLogger("distribute.test").warning("slow")
        logging.getLogger("distribute.test").debug("not at the default level")
    finally:
        REQUEST_ID.reset(token)
        root.removeHandler(handler)
        root.setLevel(level)
    (line,) = stream.getvalue().splitlines()
    assert line.endswith("WARNING distribute.test [request abc123]: slow")
