"""Result verification, the pure part: canonical result bytes, quorum decisions, the trust policy.

No I/O, no clocks: the dispatcher gathers the votes (replicas of one dataset, from storage) and acts
on the verdicts; storage writes them. See docs/verification.md.

- `canonical(value)`: msgpack with map keys sorted, so equal values always give equal bytes.
- `decide(votes, ...)`: a quorum of `replication` agreeing results from distinct workers (distinct
  identity *and* distinct address) decides; otherwise more copies are wanted, up to `max_copies`,
  after which the dataset is a conflict.
- `trust_probability(agreed, ...)`: adaptive replication: the chance that a worker with a record of
  `agreed` agreeing results (since its last disagreement) gets a task without replicas.
- `comparator_kernel(source)`: wraps an owner's `compare(a, b)` as a sandbox kernel.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import msgpack

__all__ = [
    "Conflict",
    "More",
    "Quorum",
    "Verdict",
    "VoteLike",
    "canonical",
    "comparator_input",
    "comparator_kernel",
    "decide",
    "groups",
    "trust_probability",
    "worker_key",
]


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value, key=_order)}
    if isinstance(value, (list, tuple)):
        return [_sorted(v) for v in value]
    return value


def _order(key: Any) -> tuple[str, str]:
    # Keys of mixed types (msgpack allows int and str keys in one map) still sort deterministically.
    return (type(key).__name__, repr(key))


def canonical(value: Any) -> bytes:
    """msgpack of a decoded result with every map's keys sorted: equal values give equal bytes."""
    if isinstance(value, (dict, list, tuple)):
        value = _sorted(value)
    packed: bytes = msgpack.packb(value)
    return packed


def worker_key(identity: str, address: str) -> str:
    """Who a result is from, for records and flags: the identity it sent, else its address."""
    return identity if identity else f"ip:{address}"


class VoteLike(Protocol):
    """One stored result of a replicated dataset, as `decide` reads it (storage gives `models.Vote`)."""

    @property
    def result_id(self) -> int: ...
    @property
    def payload(self) -> bytes | None: ...
    @property
    def worker(self) -> str: ...  # worker_key
    @property
    def address(self) -> str: ...


V = TypeVar("V", bound=VoteLike)


@dataclass(frozen=True, slots=True)
class Quorum:
    canonical: int  # result id of the result kept as the dataset's answer
    agreeing: tuple[int, ...]  # result ids that agree with it (canonical included)
    disagreeing: tuple[int, ...]
    liars: tuple[str, ...]  # worker keys whose results disagree with the quorum


@dataclass(frozen=True, slots=True)
class More:
    wanted: int  # results wanted in all (stored ones included) before deciding again


@dataclass(frozen=True, slots=True)
class Conflict:
    results: tuple[int, ...]


Verdict = Quorum | More | Conflict


def groups(votes: Sequence[V], same: Callable[[bytes | None, bytes | None], bool]) -> list[list[V]]:
    """Votes grouped by agreement with each group's first member (in the order given)."""
    found: list[list[V]] = []
    for vote in votes:
        for group in found:
            if same(group[0].payload, vote.payload):
                group.append(vote)
                break
        else:
            found.append([vote])
    return found


def _support(group: Sequence[VoteLike], distinct_addresses: bool) -> int:
    """Independent workers behind a group: distinct identities, and distinct addresses if required."""
    workers = len({v.worker for v in group})
    return min(workers, len({v.address for v in group})) if distinct_addresses else workers


def decide(
    votes: Sequence[VoteLike],
    replication: int,
    max_copies: int,
    same: Callable[[bytes | None, bytes | None], bool] = lambda a, b: a == b,
    *,
    distinct_addresses: bool = True,
) -> Verdict:
    """The verdict on one dataset's results so far."""
    ordered = sorted(votes, key=lambda v: v.result_id)
    found = groups(ordered, same)
    best = max(found, key=lambda g: (_support(g, distinct_addresses), -g[0].result_id), default=[])
    support = _support(best, distinct_addresses)
    if best and support >= replication:
        agreeing = {v.result_id for v in best}
        others = tuple(v.result_id for v in ordered if v.result_id not in agreeing)
        liars = tuple(sorted({v.worker for v in ordered if v.result_id not in agreeing}))
        return Quorum(best[0].result_id, tuple(sorted(agreeing)), others, liars)
    if len(ordered) >= max_copies:
        return Conflict(tuple(v.result_id for v in ordered))
    return More(min(max_copies, len(ordered) + replication - support))


def trust_probability(agreed: int, *, threshold: int, ceiling: float) -> float:
    """Chance that a worker with `agreed` agreeing results in a row gets a task without replicas.

    Zero until the record reaches `threshold`, then `ceiling * (1 - threshold / agreed)`: it rises
    with the record towards `ceiling` (never 1, so every worker keeps being checked). A disagreement
    resets `agreed` to zero. `threshold` 0 disables adaptive replication.
    """
    if threshold <= 0 or agreed <= threshold:
        return 0.0
    return ceiling * (1.0 - threshold / agreed)


def comparator_kernel(source: str) -> str:
    """An owner's comparison function as a kernel for the sandbox: main([a, b]) -> compare(a, b).

    The owner's file evaluates to an object with `compare(a, b)` (like a kernel has `main`), or to
    the function itself. As with kernels (embed/src/blob.js), `var __c =` and a line break before
    and after the source accept leading comments, a trailing semicolon and a trailing line comment.
    """
    return (
        "(function(){ var __c =\n" + source + "\n;\n"
        " var __f = typeof __c === 'function' ? __c : __c.compare;\n"
        " return { main: function (pair) { return __f(pair[0], pair[1]) ? 1 : 0; } }; })()"
    )


def comparator_input(a: bytes | None, b: bytes | None) -> bytes:
    """The dataset a comparator kernel is run on: [a, b] decoded (null for no result)."""
    pair: bytes = msgpack.packb([None if x is None else msgpack.unpackb(x) for x in (a, b)])
    return pair
