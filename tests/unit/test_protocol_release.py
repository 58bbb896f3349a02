"""The `release` frame (protocol v1.1) and the server's feature list: encoding, decoding, validation."""

from __future__ import annotations

import msgpack
import pytest

from distribute import protocol as p
from distribute.errors import ProtocolError


def campaign(**extra: object) -> bytes:
    body = {"t": "campaign", "id": 3, "name": "n", "hash": "h", "kernel": None, "static": None}
    frame: bytes = msgpack.packb({**body, "task_timeout": 60.0, "max_result_bytes": 1024, **extra})
    return frame


def test_a_release_frame_round_trips_with_its_ids_and_final_flag() -> None:
    message = p.Release((4, 9, 2**40), final=True)
    assert p.decode_client(p.encode(message)) == message


def test_a_release_frame_without_final_is_not_final() -> None:
    assert p.decode_client(msgpack.packb({"t": "release", "ids": [7]})) == p.Release((7,), final=False)


def test_a_release_frame_may_hold_at_most_max_slots_ids() -> None:
    assert len(p.decode_client(p.encode(p.Release(tuple(range(p.MAX_SLOTS))))).tasks) == p.MAX_SLOTS  # type: ignore[union-attr]
    with pytest.raises(ProtocolError) as raised:
        p.decode_client(msgpack.packb({"t": "release", "ids": list(range(p.MAX_SLOTS + 1))}))
    assert raised.value.code == p.CLOSE_PROTOCOL_ERROR


@pytest.mark.parametrize(
    "body",
    [
        {"t": "release"},
        {"t": "release", "ids": 5},
        {"t": "release", "ids": ["5"]},
        {"t": "release", "ids": [-1]},
        {"t": "release", "ids": [True]},
        {"t": "release", "ids": [1], "final": "yes"},
    ],
)
def test_a_malformed_release_frame_is_a_protocol_error(body: dict[str, object]) -> None:
    with pytest.raises(ProtocolError) as raised:
        p.decode_client(msgpack.packb(body))
    assert raised.value.code == p.CLOSE_PROTOCOL_ERROR


def test_the_campaign_frame_carries_the_servers_features() -> None:
    info = p.CampaignInfo(3, "n", "h", None, None, 60.0, 1024, features=p.FEATURES)
    decoded = p.decode_server(p.encode(info))
    assert isinstance(decoded, p.CampaignInfo) and p.FEATURE_RELEASE in decoded.features


def test_a_campaign_frame_of_a_server_without_features_lists_none() -> None:
    decoded = p.decode_server(campaign())
    assert isinstance(decoded, p.CampaignInfo) and decoded.features == ()


@pytest.mark.parametrize("features", ["release", [1], ["x" * 65], ["f"] * (p.MAX_FEATURES + 1)])
def test_a_malformed_feature_list_is_a_protocol_error(features: object) -> None:
    with pytest.raises(ProtocolError):
        p.decode_server(campaign(features=features))
