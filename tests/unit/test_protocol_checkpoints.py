"""The `progress` and `checkpoint` frames and resume states of `tasks` (protocol v1.1): encoding, decoding, caps."""

from __future__ import annotations

import msgpack
import pytest

from distribute import protocol as p
from distribute.errors import ProtocolError

STATE = msgpack.packb({"step": 6, "sum": 21})


def test_a_progress_frame_round_trips() -> None:
    assert p.decode_client(p.encode(p.Progress(7, 0.25))) == p.Progress(7, 0.25)


@pytest.mark.parametrize("fraction", [-0.1, 1.5, "0.5", True, None])
def test_a_progress_outside_zero_to_one_is_a_protocol_error(fraction: object) -> None:
    with pytest.raises(ProtocolError) as raised:
        p.decode_client(msgpack.packb({"t": "progress", "id": 7, "f": fraction}))
    assert raised.value.code == p.CLOSE_PROTOCOL_ERROR


def test_a_checkpoint_frame_round_trips_with_its_state_bytes() -> None:
    assert p.decode_client(p.encode(p.Checkpoint(7, STATE))) == p.Checkpoint(7, STATE)


def test_a_checkpoint_over_the_hard_cap_is_refused_before_its_state_is_decoded() -> None:
    state = b"\xc1" * (p.MAX_CHECKPOINT_BYTES + 1)  # 0xc1 is never valid msgpack: decoding it would fail otherwise
    with pytest.raises(ProtocolError) as raised:
        p.decode_client(msgpack.packb({"t": "checkpoint", "id": 7, "state": state}))
    assert raised.value.code == p.CLOSE_TOO_BIG and "over the limit" in raised.value.reason


@pytest.mark.parametrize(
    "state",
    [
        "not bytes",
        b"\xc1",  # not msgpack
        msgpack.packb(1) + msgpack.packb(2),  # two values
        msgpack.packb(b"binary"),  # not plain data
        msgpack.packb({1: 2}),  # a map key that is not a string
    ],
)
def test_a_checkpoint_whose_state_is_not_plain_msgpack_is_a_protocol_error(state: object) -> None:
    with pytest.raises(ProtocolError) as raised:
        p.decode_client(msgpack.packb({"t": "checkpoint", "id": 7, "state": state}))
    assert raised.value.code == p.CLOSE_PROTOCOL_ERROR


def test_a_reissued_task_carries_its_resume_state_and_a_new_one_none() -> None:
    frame = p.encode_tasks([p.Task(1, msgpack.packb({"n": 1}), STATE), p.Task(2, msgpack.packb(2))])
    assert msgpack.unpackb(frame) == {"t": "tasks", "tasks": [[1, {"n": 1}, STATE], [2, 2]]}
    first, second = p.decode_server(frame)  # type: ignore[misc]
    assert (first.resume, second.resume) == (STATE, None)


def test_the_campaign_frame_announces_progress_and_checkpoints_with_their_limits() -> None:
    info = p.CampaignInfo(3, "n", "h", None, None, 60.0, 1024, p.FEATURES, 65536, 10.0)
    decoded = p.decode_server(p.encode(info))
    assert decoded == info and {p.FEATURE_PROGRESS, p.FEATURE_CHECKPOINT} <= set(info.features)


def test_a_state_that_is_not_plain_data_says_where() -> None:
    with pytest.raises(ProtocolError) as raised:
        p.decode_client(msgpack.packb({"t": "checkpoint", "id": 7, "state": msgpack.packb({"a": [b"x"]})}))
    assert raised.value.reason == "checkpoint state is not plain data: binary data (msgpack bin) at state['a'][0]"
