"""Worker wire protocol v1 (with the additive v1.1 frames): messages, encoding, decoding, validation.

v1.1 adds `release`, `progress` and `checkpoint` (client to server), each used only when the server lists
its feature in the `campaign` frame, and an optional third element of a `tasks` entry: the msgpack
state a reissued task resumes from.

Pure: no I/O, no clocks, no storage. The gateway (server) and the headless worker (client) both
speak through this module; the browser harness implements the same rules in `embed/src/protocol.js`.
Every frame is one binary WebSocket message holding a msgpack map with a type key ``t``.
See docs/protocol.md for the prose version with examples.

Datasets travel as the exact msgpack bytes the generator sandbox produced: the server splices them
into `tasks` frames without decoding them (`encode_tasks`), which keeps the dispatch hot path free
of per-dataset (de)serialisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from .errors import ProtocolError
from .plain import MAX_DEPTH, OddKeys, key_kind, not_plain

__all__ = [
    "CLOSE_NORMAL",
    "CLOSE_POLICY_VIOLATION",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_TOO_BIG",
    "CLOSE_UNSUPPORTED_DATA",
    "FEATURES",
    "FEATURE_CHECKPOINT",
    "FEATURE_PROGRESS",
    "FEATURE_RELEASE",
    "MAX_CHECKPOINT_BYTES",
    "MAX_CLIENT_TEXT",
    "MAX_DEPTH",
    "MAX_SLOTS",
    "VERSION",
    "Bye",
    "CampaignInfo",
    "Checkpoint",
    "ClientMessage",
    "Hello",
    "Idle",
    "Ping",
    "Pong",
    "Progress",
    "Release",
    "Result",
    "Results",
    "ServerMessage",
    "Task",
    "TaskError",
    "decode_client",
    "decode_server",
    "encode",
    "encode_tasks",
    "not_plain",
]

VERSION = 1

# Additions to v1 a server supports, listed in its `campaign` frames (v1.1): a client uses one only
# when its server lists it, so old servers never receive what they would not understand.
FEATURE_RELEASE = "release"  # the client may hand tasks back unfinished (`Release`)
FEATURE_PROGRESS = "progress"  # the client may report a task's progress (`Progress`)
FEATURE_CHECKPOINT = "checkpoint"  # the client may checkpoint a task's state (`Checkpoint`); reissued tasks resume
FEATURES = (FEATURE_RELEASE, FEATURE_PROGRESS, FEATURE_CHECKPOINT)

# WebSocket close codes (RFC 6455 §7.4.1) used when a peer misbehaves.
CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002  # undecodable frame, unknown type, missing field, out of order
CLOSE_UNSUPPORTED_DATA = 1003  # a text frame where a binary one is required
CLOSE_POLICY_VIOLATION = 1008  # a result for a task this connection does not hold, limits
CLOSE_TOO_BIG = 1009  # a frame over the size limit

MAX_SLOTS = 256  # most tasks one connection may ask to hold at once
MAX_TEXT = 64 * 1024  # longest error message / stack trace kept
MAX_FEATURES = 16  # most names in a `campaign` frame's `features` (each up to 64 characters)
# The hard cap of a checkpoint's state, checked before the state is decoded; the server's setting
# `checkpoint_max_bytes` (at most this) is the cap it announces and enforces.
MAX_CHECKPOINT_BYTES = 16 * 1024 * 1024
MAX_SITE_CHARS = 2048  # longest `site` ticket in hello (v1.1)
MAX_CLIENT_TEXT = 256  # longest string value of hello's `client` map kept (embed/src/protocol.js clips alike)


# --------------------------------------------------------------------------- client → server


@dataclass(frozen=True, slots=True)
class Hello:
    """First frame of every connection: which campaign to serve (None = any) and how many slots."""

    campaign: int | None = None
    slots: int = 1
    client: dict[str, Any] = field(default_factory=dict)
    have: tuple[str, ...] = ()  # campaign content hashes the client already holds
    version: int = VERSION
    site: str | None = None  # v1.1: the site ticket of the broker page (work/sites.py); None: anonymous


@dataclass(frozen=True, slots=True)
class Result:
    """A finished task. `value` None means the kernel returned null/undefined (no result)."""

    task: int
    value: Any
    compute_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class Results:
    """Several finished tasks in one frame (batching for tiny tasks)."""

    items: tuple[Result, ...]


@dataclass(frozen=True, slots=True)
class TaskError:
    """The kernel threw (or was stopped) while computing `task`."""

    task: int
    message: str
    stack: str = ""
    compute_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class Release:
    """Tasks handed back unfinished (v1.1, when the server lists FEATURE_RELEASE): another worker gets
    them at once, and no kernel error is counted. `final`: the worker is leaving, send it no more tasks."""

    tasks: tuple[int, ...]
    final: bool = False


@dataclass(frozen=True, slots=True)
class Progress:
    """How far the kernel is with `task` (v1.1, FEATURE_PROGRESS): `fraction` in [0, 1]."""

    task: int
    fraction: float


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The kernel's state for `task` (v1.1, FEATURE_CHECKPOINT): plain data, msgpack-encoded.

    A reissued task carries the latest one (`Task.resume`); decoding checked its size against
    MAX_CHECKPOINT_BYTES before decoding it, and that it is plain data."""

    task: int
    state: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    nonce: int = 0


# --------------------------------------------------------------------------- server → client


@dataclass(frozen=True, slots=True)
class CampaignInfo:
    """The campaign a connection now serves. `kernel`/`static` are None when the client has `hash`."""

    id: int
    name: str
    hash: str
    kernel: str | None
    static: str | None
    task_timeout: float
    max_result_bytes: int
    features: tuple[str, ...] = ()  # v1.1: the additions to v1 this server supports (FEATURES)
    checkpoint_max_bytes: int = 0  # v1.1 (FEATURE_CHECKPOINT): the largest state the server keeps
    checkpoint_interval: float = 0.0  # v1.1 (FEATURE_CHECKPOINT): send at most one checkpoint per task this often


@dataclass(frozen=True, slots=True)
class Task:
    """One dataset to compute; `dataset` is the dataset's msgpack encoding.

    `resume` (v1.1): the msgpack state of the task's latest checkpoint, when it is handed out again."""

    id: int
    dataset: bytes
    resume: bytes | None = None


@dataclass(frozen=True, slots=True)
class Idle:
    """No task for this connection right now; more may come (the server will push them)."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class Bye:
    """The server is done with this connection (campaign complete, no work, shutting down)."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class Pong:
    nonce: int = 0


ClientMessage = Hello | Result | Results | TaskError | Ping | Release | Progress | Checkpoint
ServerMessage = CampaignInfo | Idle | Bye | Pong


# --------------------------------------------------------------------------- encoding


def encode(message: ClientMessage | ServerMessage) -> bytes:
    """Encode one message as a msgpack frame (for `tasks` frames use `encode_tasks`)."""
    match message:
        case Hello():
            body = {
                "t": "hello",
                "v": message.version,
                "campaign": message.campaign,
                "slots": message.slots,
                "client": message.client,
                "have": list(message.have),
                "site": message.site,  # v1.1: None (anonymous) is what a v1 server assumes without it
            }
        case Result():
            body = {"t": "result", "id": message.task, "value": message.value, "ms": message.compute_ms}
        case Results():
            body = {"t": "results", "items": [[r.task, r.value, r.compute_ms] for r in message.items]}
        case TaskError():
            body = {
                "t": "error",
                "id": message.task,
                "message": message.message,
                "stack": message.stack,
                "ms": message.compute_ms,
            }
        case Ping():
            body = {"t": "ping", "n": message.nonce}
        case Release():
            body = {"t": "release", "ids": list(message.tasks), "final": message.final}
        case Progress():
            body = {"t": "progress", "id": message.task, "f": message.fraction}
        case Checkpoint():
            body = {"t": "checkpoint", "id": message.task, "state": message.state}
        case CampaignInfo():
            body = {
                "t": "campaign",
                "id": message.id,
                "name": message.name,
                "hash": message.hash,
                "kernel": message.kernel,
                "static": message.static,
                "task_timeout": message.task_timeout,
                "max_result_bytes": message.max_result_bytes,
                "features": list(message.features),
            }
            if message.checkpoint_max_bytes:
                body["checkpoint_max_bytes"] = message.checkpoint_max_bytes
                body["checkpoint_interval"] = message.checkpoint_interval
        case Idle():
            body = {"t": "idle", "reason": message.reason}
        case Bye():
            body = {"t": "bye", "reason": message.reason}
        case Pong():
            body = {"t": "pong", "n": message.nonce}
        case _:
            raise TypeError(f"not a protocol message: {message!r}")
    frame: bytes = msgpack.packb(body)
    return frame


_TASKS_HEAD = msgpack.packb("t") + msgpack.packb("tasks") + msgpack.packb("tasks")


def encode_tasks(tasks: Sequence[Task]) -> bytes:
    """Encode a `tasks` frame, splicing each dataset's msgpack bytes in unchanged.

    The frame is ``{"t": "tasks", "tasks": [[id, dataset], ...]}``; msgpack values are
    self-delimiting, so pre-encoded datasets can be concatenated into the array as they are.
    A task with a resume state is ``[id, dataset, state]``, the state as msgpack binary (v1.1).
    """
    packer = msgpack.Packer()
    parts = [b"\x82", _TASKS_HEAD, packer.pack_array_header(len(tasks))]
    for task in tasks:
        parts.append(b"\x92" if task.resume is None else b"\x93")  # fixarray of 2 (3 with a resume state)
        parts.append(packer.pack(task.id))
        parts.append(task.dataset)
        if task.resume is not None:
            parts.append(packer.pack(task.resume))
    return b"".join(parts)


# --------------------------------------------------------------------------- decoding


def _pairs(pairs: list[tuple[Any, Any]]) -> dict[str, Any] | OddKeys:
    for key, _ in pairs:
        if type(key) is not str:
            return OddKeys(key_kind(key))
    return dict(pairs)


def _unpack(frame: bytes | str) -> dict[str, Any]:
    if isinstance(frame, str):
        raise ProtocolError(CLOSE_UNSUPPORTED_DATA, "frames must be binary msgpack, not text")
    try:
        body = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except ValueError as exc:
        # strict_map_key refuses the whole frame for one map key that is neither str nor bytes.
        # Decode it again with every map built by `_pairs`, so a result with such a key becomes a
        # kernel error (`not_plain`) rather than a closed connection; no odd key is ever hashed
        # (colliding integer or float keys would make a dict quadratic). Only such frames pay.
        if "map key" not in str(exc):
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"undecodable frame: {type(exc).__name__}") from None
        try:
            body = msgpack.unpackb(frame, raw=False, strict_map_key=False, object_pairs_hook=_pairs)
        except Exception as exc:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"undecodable frame: {type(exc).__name__}") from None
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"undecodable frame: {type(exc).__name__}") from None
    if not isinstance(body, dict) or not isinstance(body.get("t"), str):
        raise ProtocolError(CLOSE_PROTOCOL_ERROR, "a frame must be a map with a string key 't'")
    return body


_MAX_ID = 2**63 - 1


def _int(body: dict[str, Any], key: str, *, optional: bool = False, low: int = 0, high: int = _MAX_ID) -> Any:
    value = body.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"'{key}' must be an integer in [{low}, {high}]")
    return value


def _number(body: dict[str, Any], key: str) -> float:
    value = body.get(key, 0)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1e12:
        raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"'{key}' must be a non-negative number")
    return float(value)


def _text(body: dict[str, Any], key: str, *, default: str | None = None) -> str:
    value = body.get(key, default)
    if not isinstance(value, str):
        raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"'{key}' must be a string")
    return value[:MAX_TEXT]


def _client_info(client: dict[str, Any]) -> dict[str, Any]:
    """Hello's `client` map as kept for the connection's life: 16 scalar entries, strings clipped."""
    info: dict[str, Any] = {}
    for key, value in list(client.items())[:16]:
        if isinstance(value, str):
            info[str(key)[:64]] = value[:MAX_CLIENT_TEXT]
        elif isinstance(value, (int, float)):
            info[str(key)[:64]] = value
    return info


def decode_client(frame: bytes | str) -> ClientMessage:
    """Decode and validate a frame sent by a worker; raises ProtocolError with a close code."""
    body = _unpack(frame)
    kind = body["t"]
    if kind == "result":
        return Result(task=_int(body, "id"), value=body.get("value"), compute_ms=_number(body, "ms"))
    if kind == "results":
        items = body.get("items")
        if not isinstance(items, list) or not items or len(items) > MAX_SLOTS:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"'items' must be a list of 1 to {MAX_SLOTS} results")
        results = []
        for item in items:
            if not isinstance(item, list) or len(item) != 3:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "each result must be [id, value, ms]")
            task, value, ms = item
            # The common case checked inline (up to 256 items a frame); anything unusual goes
            # through the general validators, which accept or reject exactly as before.
            if type(task) is not int or not 0 <= task <= _MAX_ID:
                task = _int({"id": task}, "id")
            if (type(ms) is not float and type(ms) is not int) or not 0 <= ms < 1e12:
                ms = _number({"ms": ms}, "ms")
            results.append(Result(task, value, float(ms)))
        return Results(items=tuple(results))
    if kind == "error":
        return TaskError(
            task=_int(body, "id"),
            message=_text(body, "message"),
            stack=_text(body, "stack", default=""),
            compute_ms=_number(body, "ms"),
        )
    if kind == "ping":
        return Ping(nonce=_int(body, "n", optional=True) or 0)
    if kind == "release":
        ids, final = body.get("ids"), body.get("final", False)
        if not isinstance(ids, list) or len(ids) > MAX_SLOTS or not isinstance(final, bool):
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"'ids' must be a list of at most {MAX_SLOTS} task ids")
        return Release(tasks=tuple(_int({"id": task}, "id") for task in ids), final=final)
    if kind == "progress":
        fraction = body.get("f")
        if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0 <= fraction <= 1:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, "'f' must be a number in [0, 1]")
        return Progress(task=_int(body, "id"), fraction=float(fraction))
    if kind == "checkpoint":
        return Checkpoint(task=_int(body, "id"), state=checkpoint_state(body.get("state")))
    if kind == "hello":
        version = _int(body, "v", low=1, high=2**31)
        if version != VERSION:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"unsupported protocol version {version}")
        client = body.get("client") or {}
        have = body.get("have") or []
        if not isinstance(client, dict) or not isinstance(have, list) or len(have) > 16:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, "'client' must be a map and 'have' a short list")
        if not all(isinstance(h, str) and len(h) <= 128 for h in have):
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, "'have' must hold content hashes")
        if (site := body.get("site")) is not None and (not isinstance(site, str) or len(site) > MAX_SITE_CHARS):
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"'site' must be a ticket of at most {MAX_SITE_CHARS} characters")
        return Hello(
            campaign=_int(body, "campaign", optional=True, low=1),
            slots=_int(body, "slots", low=1, high=MAX_SLOTS),
            client=_client_info(client),
            have=tuple(have),
            version=version,
            site=site,
        )
    raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"unknown message type {kind[:32]!r}")


def checkpoint_state(state: Any, limit: int = MAX_CHECKPOINT_BYTES) -> bytes:
    """A checkpoint's state as received: binary of at most `limit` bytes (checked before anything decodes
    it) holding one msgpack value of plain data; raises ProtocolError (1009 when too big, else 1002)."""
    if not isinstance(state, bytes):
        raise ProtocolError(CLOSE_PROTOCOL_ERROR, "'state' must be binary (the state's msgpack encoding)")
    if len(state) > limit:
        raise ProtocolError(CLOSE_TOO_BIG, f"checkpoint of {len(state)} bytes is over the limit of {limit}")
    try:
        value = msgpack.unpackb(state, raw=False, strict_map_key=True)
    except Exception as exc:  # garbage, trailing bytes, odd map keys
        raise ProtocolError(
            CLOSE_PROTOCOL_ERROR, f"checkpoint state is not one msgpack value: {type(exc).__name__}"
        ) from None
    if problem := not_plain(value):
        where = problem.replace(" at result", " at state", 1)
        raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"checkpoint state is not plain data: {where}")
    return state


def _features(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_FEATURES:
        raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"'features' must be a list of at most {MAX_FEATURES} names")
    if not all(isinstance(name, str) and len(name) <= 64 for name in value):
        raise ProtocolError(CLOSE_PROTOCOL_ERROR, "'features' must hold short strings")
    return tuple(value)


def decode_server(frame: bytes) -> ServerMessage | list[Task]:
    """Decode a frame sent by the server (used by the headless worker and the tests).

    A `tasks` frame decodes to a list of Task whose `dataset` is re-encoded msgpack bytes.
    """
    body = _unpack(frame)
    kind = body["t"]
    if kind == "tasks":
        items = body.get("tasks")
        if not isinstance(items, list):
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, "'tasks' must be a list")
        return [
            Task(id=int(item[0]), dataset=msgpack.packb(item[1]), resume=item[2] if len(item) > 2 else None)
            for item in items
        ]
    if kind == "campaign":
        return CampaignInfo(
            id=_int(body, "id"),
            name=_text(body, "name", default=""),
            hash=_text(body, "hash"),
            kernel=body.get("kernel"),
            static=body.get("static"),
            task_timeout=_number(body, "task_timeout"),
            max_result_bytes=_int(body, "max_result_bytes"),
            features=_features(body.get("features", [])),
            checkpoint_max_bytes=_int(body, "checkpoint_max_bytes", optional=True) or 0,
            checkpoint_interval=_number(body, "checkpoint_interval"),
        )
    if kind == "idle":
        return Idle(reason=_text(body, "reason", default=""))
    if kind == "bye":
        return Bye(reason=_text(body, "reason", default=""))
    if kind == "pong":
        return Pong(nonce=_int(body, "n", optional=True) or 0)
    raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"unknown message type {kind[:32]!r}")
