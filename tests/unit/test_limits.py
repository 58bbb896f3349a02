"""The abuse-limit policies on their own, with explicit times: no server, no clock, no sleeping."""

from __future__ import annotations

import pytest

from distribute.limits import (
    Address,
    Addresses,
    Meter,
    SlotAllowance,
    TokenBucket,
    address_group,
    connection_cap,
    identity_keys,
)
from distribute.settings import load_settings


def settings(**overrides: object):
    return load_settings(overrides=overrides, environ={})


# --------------------------------------------------------------------------- token buckets


def test_a_bucket_starts_full_and_refuses_once_empty() -> None:
    bucket = TokenBucket(rate=10, capacity=20, now=0.0)
    assert all(bucket.take(1, 0.0) for _ in range(20))
    assert not bucket.take(1, 0.0)


def test_a_bucket_refills_at_its_rate_up_to_its_capacity() -> None:
    bucket = TokenBucket(rate=10, capacity=20, now=0.0)
    assert bucket.take(20, 0.0)
    assert not bucket.take(6, 0.5)  # 5 tokens back after half a second
    assert bucket.take(5, 0.5)
    assert not bucket.take(21, 1000.0)  # never more than the capacity saved up
    assert bucket.take(20, 1000.0)


def test_a_refused_take_spends_nothing() -> None:
    bucket = TokenBucket(rate=1, capacity=3, now=0.0)
    assert not bucket.take(4, 0.0)
    assert bucket.take(3, 0.0)


def test_a_meter_names_the_frame_rate_it_enforces() -> None:
    meter = Meter(frames_per_second=5, bytes_per_second=1_000_000, max_frame_bytes=1000, now=0.0)
    reasons = [meter.over(10, 0.0) for _ in range(11)]  # a burst of 2 s worth is allowed
    assert reasons[:10] == [""] * 10
    assert reasons[10] == "frame rate over 5 frames/s"


def test_a_meter_names_the_byte_rate_and_its_scope() -> None:
    meter = Meter(frames_per_second=1000, bytes_per_second=1000, max_frame_bytes=500, now=0.0, suffix=" from here")
    assert meter.over(2000, 0.0) == ""  # the burst: 2 s of the rate
    assert meter.over(1, 0.0) == "byte rate over 1,000 bytes/s from here"
    assert meter.over(1000, 1.0) == ""  # a second later, a second's worth again


def test_the_byte_bucket_always_admits_one_frame_of_the_largest_size() -> None:
    meter = Meter(frames_per_second=1000, bytes_per_second=10, max_frame_bytes=4096, now=0.0)
    assert meter.over(4096, 0.0) == ""
    assert meter.over(4096, 0.0).startswith("byte rate")


# --------------------------------------------------------------------------- per address


def test_connections_over_the_per_address_cap_are_refused_and_others_are_not() -> None:
    addresses = Addresses(settings(max_connections_per_ip=2))
    first = addresses.admit("10.0.0.1", 0.0)
    assert isinstance(first, Address)
    assert addresses.admit("10.0.0.1", 0.0) is first
    assert addresses.admit("10.0.0.1", 0.0) == "too many connections from this address (limit 2)"
    assert isinstance(addresses.admit("10.0.0.2", 0.0), Address)
    addresses.leave(first)
    assert addresses.admit("10.0.0.1", 0.0) is first


def test_an_address_is_forgotten_with_its_last_connection() -> None:
    addresses = Addresses(settings())
    address = addresses.admit("10.0.0.1", 0.0)
    assert isinstance(address, Address)
    addresses.admit("10.0.0.1", 0.0)
    addresses.leave(address)
    assert "10.0.0.1" in addresses.by_address
    addresses.leave(address)
    assert addresses.by_address == {}
    assert addresses.connections == 0


def test_the_per_address_cap_defaults_to_what_a_large_nat_can_live_with() -> None:
    assert settings().max_connections_per_ip == 64


def test_connections_over_the_servers_cap_are_refused_from_any_address() -> None:
    addresses = Addresses(settings(max_connections_per_ip=2), max_connections=3)
    admitted = [addresses.admit(remote, 0.0) for remote in ("10.0.0.1", "10.0.0.1", "10.0.0.2")]
    assert all(isinstance(a, Address) for a in admitted)
    assert addresses.admit("10.0.0.3", 0.0) == "too many connections to this server (limit 3)"
    leaving = admitted[0]
    assert isinstance(leaving, Address)
    addresses.leave(leaving)
    assert isinstance(addresses.admit("10.0.0.3", 0.0), Address)


@pytest.mark.parametrize(
    ("remote", "group"),
    [
        ("1.2.3.4", "1.2.3.4"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:DB8:1:3::1", "2001:db8:1:3::/64"),
        ("::1", "::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("::ffff:1.2.3.4", "1.2.3.4"),
        ("", ""),
        ("not an address", "not an address"),
    ],
)
def test_an_ipv6_address_counts_as_its_slash_64(remote: str, group: str) -> None:
    assert address_group(remote) == group


def test_two_ipv6_addresses_of_one_slash_64_share_every_per_address_limit() -> None:
    addresses = Addresses(settings(max_connections_per_ip=2, max_frames_per_second_per_ip=1.0))
    first = addresses.admit("2001:db8:0:1::1", 0.0)
    second = addresses.admit("2001:db8:0:1:dead:beef:0:2", 0.0)
    assert first is second and isinstance(first, Address)  # one connection count, task room and meter
    assert addresses.admit("2001:db8:0:1::3", 0.0) == "too many connections from this address (limit 2)"
    assert isinstance(addresses.admit("2001:db8:0:2::1", 0.0), Address)  # the next /64 is another address
    assert identity_keys("2001:db8:0:1::1", {}) == identity_keys("2001:db8:0:1::ff", {}) == ("ip:2001:db8:0:1::/64",)


@pytest.mark.parametrize(
    ("setting", "open_files", "cap"),
    [
        (0, 1024, 768),  # derived: 256 kept for the database, logs and children
        (0, 20_000, 18_000),  # a tenth kept once that is more than 256
        (100, 20_000, 100),  # a setting below the room is kept
        (50_000, 20_000, 18_000),  # one above it is lowered
        (0, 100, 1),
    ],
)
def test_the_servers_connection_cap_stays_below_the_open_files_limit(setting: int, open_files: int, cap: int) -> None:
    assert connection_cap(setting, open_files) == cap


def test_connections_of_one_address_share_its_task_room_and_meter() -> None:
    addresses = Addresses(settings(max_tasks_per_ip=10, max_frames_per_second_per_ip=1.0))
    first = addresses.admit("10.0.0.1", 0.0)
    second = addresses.admit("10.0.0.1", 0.0)
    assert first is second and isinstance(first, Address) and isinstance(second, Address)
    first.held += 7
    assert addresses.room(second) == 3
    assert first.meter.over(1, 0.0) == first.meter.over(1, 0.0) == ""
    assert second.meter.over(1, 0.0) == "frame rate over 1 frames/s from this address"


# --------------------------------------------------------------------------- slot allowances


def test_an_unknown_worker_gets_what_it_asks_for_up_to_the_ceiling() -> None:
    allowance = SlotAllowance(ceiling=256, forget_after=3600)
    assert allowance.granted(8, ["ip:a"], 0.0) == 8
    assert allowance.granted(1000, ["ip:a"], 0.0) == 256
    assert len(allowance) == 0


def test_each_missed_task_halves_the_slots_down_to_one() -> None:
    allowance = SlotAllowance(ceiling=256, forget_after=3600)
    assert allowance.missed("ip:a", 1, 0.0, granted=16) == 8
    assert allowance.missed("ip:a", 1, 1.0, granted=8) == 4
    assert allowance.missed("ip:a", 3, 2.0, granted=4) == 1  # never below one: it can still prove itself
    assert allowance.granted(16, ["ip:a"], 2.0) == 1


def test_a_worker_that_keeps_missing_gets_fewer_and_fewer_slots() -> None:
    allowance = SlotAllowance(ceiling=256, forget_after=3600)
    granted = []
    for t in range(5):
        slots = allowance.granted(16, ["ip:a"], float(t))
        granted.append(slots)
        allowance.missed("ip:a", 1, float(t), slots)
    assert granted == [16, 8, 4, 2, 1]


def test_answers_earn_slots_back_one_each_and_the_record_goes_at_the_ceiling() -> None:
    allowance = SlotAllowance(ceiling=8, forget_after=3600)
    allowance.missed("ip:a", 8, 0.0, granted=8)
    assert allowance.granted(8, ["ip:a"], 0.0) == 1
    allowance.answered("ip:a", 1, 1.0)
    assert allowance.granted(8, ["ip:a"], 1.0) == 2
    allowance.answered("ip:a", 2, 2.0)
    assert allowance.granted(8, ["ip:a"], 2.0) == 4
    allowance.answered("ip:a", 4, 3.0)
    assert allowance.granted(8, ["ip:a"], 3.0) == 8
    assert len(allowance) == 0  # back at the ceiling: nothing left to remember


def test_answers_from_a_worker_with_a_clean_record_change_nothing() -> None:
    allowance = SlotAllowance(ceiling=8, forget_after=3600)
    allowance.answered("ip:a", 100, 0.0)
    assert len(allowance) == 0 and allowance.granted(8, ["ip:a"], 0.0) == 8


def test_a_miss_is_forgotten_after_the_memory_time() -> None:
    allowance = SlotAllowance(ceiling=256, forget_after=600)
    allowance.missed("ip:a", 4, 100.0, granted=16)
    assert allowance.granted(16, ["ip:a"], 699.9) == 1
    assert allowance.granted(16, ["ip:a"], 700.0) == 16
    assert len(allowance) == 0


def test_the_smallest_allowance_of_address_and_client_id_applies() -> None:
    allowance = SlotAllowance(ceiling=256, forget_after=3600)
    allowance.missed("id:browser-1", 2, 0.0, granted=8)  # this browser misses, its address is clean
    assert allowance.granted(8, ["ip:a", "id:browser-1"], 0.0) == 2
    assert allowance.granted(8, ["ip:a", "id:browser-2"], 0.0) == 8  # a neighbour behind the same address
    assert allowance.granted(8, ["ip:b", "id:browser-1"], 0.0) == 2  # the same browser from elsewhere


def test_records_are_bounded_and_the_oldest_miss_goes_first() -> None:
    allowance = SlotAllowance(ceiling=256, forget_after=3600, max_records=3)
    for k in range(5):
        allowance.missed(f"id:{k}", 1, float(k), granted=8)
    assert len(allowance) == 3
    assert allowance.granted(8, ["id:0"], 5.0) == 8 and allowance.granted(8, ["id:1"], 5.0) == 8
    assert allowance.granted(8, ["id:4"], 5.0) == 4


@pytest.mark.parametrize(
    ("client", "keys"),
    [
        ({}, ("ip:1.2.3.4",)),
        ({"id": "b-7"}, ("ip:1.2.3.4", "id:b-7")),
        ({"id": 42}, ("ip:1.2.3.4", "id:42")),
        ({"id": ""}, ("ip:1.2.3.4",)),
        ({"id": True}, ("ip:1.2.3.4",)),
        ({"id": 1.5}, ("ip:1.2.3.4",)),
    ],
)
def test_a_connection_is_known_by_its_address_and_its_client_id(client: dict, keys: tuple[str, ...]) -> None:
    assert identity_keys("1.2.3.4", client) == keys
