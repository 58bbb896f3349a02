"""Protocol v1 encoding and validation: pure functions, tested directly."""

from __future__ import annotations

import msgpack
import pytest

from distribute import protocol as p
from distribute.errors import ProtocolError


@pytest.mark.parametrize(
    "message",
    [
        p.Hello(campaign=3, slots=4, client={"kind": "test"}, have=("abc",)),
        p.Hello(campaign=None, slots=1),
        p.Result(task=7, value={"x": [1, 2.5, "s"]}, compute_ms=1.5),
        p.Result(task=8, value=None, compute_ms=0.0),
        p.Results(items=(p.Result(1, 1, 1.0), p.Result(2, None, 2.0))),
        p.TaskError(task=9, message="boom", stack="at main", compute_ms=3.0),
        p.Ping(nonce=5),
    ],
)
def test_client_messages_round_trip(message: p.ClientMessage) -> None:
    assert p.decode_client(p.encode(message)) == message


@pytest.mark.parametrize(
    "message",
    [
        p.CampaignInfo(id=1, name="n", hash="h", kernel="k", static="s", task_timeout=5.0, max_result_bytes=10),
        p.CampaignInfo(id=1, name="n", hash="h", kernel=None, static=None, task_timeout=5.0, max_result_bytes=10),
        p.Idle("waiting"),
        p.Bye("complete"),
        p.Pong(3),
    ],
)
def test_server_messages_round_trip(message: p.ServerMessage) -> None:
    assert p.decode_server(p.encode(message)) == message


def test_tasks_frame_splices_datasets_unchanged() -> None:
    datasets = [msgpack.packb({"min": i, "max": i + 100}) for i in range(0, 300, 100)]
    frame = p.encode_tasks([p.Task(10 + i, d) for i, d in enumerate(datasets)])
    body = msgpack.unpackb(frame)
    assert body == {
        "t": "tasks",
        "tasks": [[10, {"min": 0, "max": 100}], [11, {"min": 100, "max": 200}], [12, {"min": 200, "max": 300}]],
    }
    assert p.decode_server(frame) == [p.Task(10 + i, d) for i, d in enumerate(datasets)]


def test_large_task_ids_are_encoded_compactly_and_exactly() -> None:
    frame = p.encode_tasks([p.Task(2**40, msgpack.packb(None))])
    assert msgpack.unpackb(frame)["tasks"] == [[2**40, None]]


def close_code(frame: bytes | str) -> int:
    with pytest.raises(ProtocolError) as caught:
        p.decode_client(frame)
    return caught.value.code


def test_text_frame_is_unsupported_data() -> None:
    assert close_code('{"t": "hello"}') == p.CLOSE_UNSUPPORTED_DATA


@pytest.mark.parametrize(
    "frame",
    [
        b"\xc1",  # never-used msgpack byte
        b"\x92\x01",  # truncated array
        msgpack.packb([1, 2]),  # not a map
        msgpack.packb({"x": 1}),  # no type
        msgpack.packb({"t": 5}),  # type not a string
        msgpack.packb({"t": "launch-missiles"}),  # unknown type
        msgpack.packb({"t": "result", "id": "seven", "value": 1}),  # id not an int
        msgpack.packb({"t": "result", "id": -1, "value": 1}),
        msgpack.packb({"t": "result", "id": True, "value": 1}),
        msgpack.packb({"t": "result", "id": 1, "value": 1, "ms": -5}),
        msgpack.packb({"t": "error", "id": 1, "message": 12}),
        msgpack.packb({"t": "hello", "v": 2, "slots": 1}),  # unknown version
        msgpack.packb({"t": "hello", "v": 1, "slots": 0}),
        msgpack.packb({"t": "hello", "v": 1, "slots": p.MAX_SLOTS + 1}),
        msgpack.packb({"t": "hello", "v": 1, "slots": 1, "campaign": "any"}),
        msgpack.packb({"t": "hello", "v": 1, "slots": 1, "have": ["x"] * 100}),
        msgpack.packb({"t": "results", "items": []}),
        msgpack.packb({"t": "results", "items": [[1, 2]]}),
        msgpack.packb({1: 2}),  # non-string map key
    ],
)
def test_malformed_frames_are_protocol_errors(frame: bytes) -> None:
    assert close_code(frame) == p.CLOSE_PROTOCOL_ERROR


def test_error_text_is_truncated() -> None:
    message = p.decode_client(p.encode(p.TaskError(1, "x" * 10**6, "y" * 10**6)))
    assert isinstance(message, p.TaskError)
    assert len(message.message) == p.MAX_TEXT
    assert len(message.stack) == p.MAX_TEXT


def test_hello_keeps_only_scalar_client_info() -> None:
    hello = p.decode_client(
        msgpack.packb({"t": "hello", "v": 1, "slots": 2, "client": {"kind": "browser", "nested": {"a": 1}}})
    )
    assert isinstance(hello, p.Hello)
    assert hello.client == {"kind": "browser"}


def test_hello_clips_client_strings_as_the_browser_does() -> None:
    """Strings in `client` are kept for the connection's life: a 1 MiB one keeps its first 256 characters."""
    frame = msgpack.packb({"t": "hello", "v": 1, "slots": 1, "client": {"kind": "x" * 2**20, "k" * 100: "y"}})
    hello = p.decode_client(frame)
    assert isinstance(hello, p.Hello)
    assert hello.client == {"kind": "x" * p.MAX_CLIENT_TEXT, "k" * 64: "y"}
    assert p.MAX_CLIENT_TEXT == 256


def nested(levels: int, inner: object = 1) -> object:
    value = inner
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        -(2**63),
        2**64 - 1,
        1.5,
        float("nan"),
        "text",
        [],
        {},
        [1, "a", None, [2.5, {"k": [True]}]],
        {"a": {"b": [1, 2, {"c": None}]}},
        nested(p.MAX_DEPTH),  # 100 arrays around a number, as embed/src/scan.js allows
        nested(p.MAX_DEPTH, []),  # and 101 when the innermost is empty
    ],
)
def test_plain_results_pass(value: object) -> None:
    assert p.not_plain(value) == ""


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"raw", "binary data (msgpack bin) at result"),
        ({"a": [1, b"x"]}, "binary data (msgpack bin) at result['a'][1]"),
        ([msgpack.ExtType(7, b"x")], "a msgpack extension (type 7) at result[0]"),
        ({"when": msgpack.Timestamp(1)}, "a msgpack timestamp at result['when']"),
        ({b"key": 1}, "a map key of type bin (b'key') at result"),
        ({"a": {1: 2}}, "a map key of type int (1) at result['a']"),
        (nested(p.MAX_DEPTH + 1), "nested deeper than 100 levels at result" + "[0]" * 40 + "…"),
        (nested(p.MAX_DEPTH + 1, []), "nested deeper than 100 levels at result" + "[0]" * 40 + "…"),
        ({"x": nested(3000)}, "nested deeper than 100 levels at result['x']" + "[0]" * 39 + "…"),
    ],
)
def test_results_that_are_not_plain_data_are_named_with_where(value: object, reason: str) -> None:
    assert p.not_plain(value) == reason


@pytest.mark.parametrize("key", [1, -1, 1.5, True, None, [1], {"a": 1}, msgpack.ExtType(1, b"")])
def test_a_result_with_a_map_key_that_is_not_a_string_decodes_and_is_not_plain(key: object) -> None:
    """msgpack's strict decoding refuses such a frame whole; the result inside is refused alone."""
    body = msgpack.packb({"k": 0}).replace(msgpack.packb("k"), msgpack.packb(key))
    frame = b"\x84" + b"".join(msgpack.packb(x) for x in ("t", "result", "id", 3, "value")) + body
    frame += msgpack.packb("ms") + msgpack.packb(1.0)
    result = p.decode_client(frame)
    assert isinstance(result, p.Result) and result.task == 3
    assert p.not_plain(result.value).startswith("a map key of type ")


def test_frames_with_odd_map_keys_elsewhere_are_still_protocol_errors() -> None:
    assert close_code(msgpack.packb({1: "x", "t": "ping"}, strict_types=False)) == p.CLOSE_PROTOCOL_ERROR
    hello = msgpack.packb({"t": "hello", "v": 1, "slots": 1, "client": {1: "x"}})
    assert close_code(hello) == p.CLOSE_PROTOCOL_ERROR
