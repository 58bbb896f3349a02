"""The console's JSON text: pretty layout, and clipping that never cuts a token in two."""

from __future__ import annotations

import json
import random
import re

from distribute.console.jsontext import clipped, pretty

TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null|[{}\[\]:,]|\s+')


def random_value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(7 if depth < 3 else 4)
    if kind == 0:
        return rng.randrange(-(10**9), 10**9)
    if kind == 1:
        return rng.random() * 10 ** rng.randrange(-5, 20)
    if kind == 2:
        return "".join(rng.choice('ab "\\,:{}[]é 5') for _ in range(rng.randrange(12)))
    if kind == 3:
        return rng.choice([True, False, None])
    if kind in (4, 5):
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(8))]
    return {f"k{i}": random_value(rng, depth + 1) for i in range(rng.randrange(6))}


def token_ends(text: str) -> set[int]:
    ends, at = {0}, 0
    for match in TOKEN.finditer(text):
        assert match.start() == at, text  # the pattern covers the whole text
        at = match.end()
        ends.add(at)
    return ends


def test_pretty_is_the_same_json_value() -> None:
    rng = random.Random(7)
    for _ in range(300):
        value = random_value(rng)
        assert json.loads(pretty(value)) == value


def test_short_containers_and_arrays_of_scalars_stay_on_one_line() -> None:
    assert pretty({"a": [1, 2], "b": "x"}) == '{"a": [1, 2], "b": "x"}'
    assert (
        pretty({"long": list(range(40)), "other": 1})
        == '{\n  "long": ' + json.dumps(list(range(40))) + ',\n  "other": 1\n}'
    )


def test_a_clipped_text_ends_between_tokens_and_counts_what_it_left_out() -> None:
    rng = random.Random(11)
    for _ in range(300):
        text = pretty(random_value(rng))
        ends = token_ends(text)
        budget = rng.randrange(1, 120)
        kept, more = clipped(text, budget)
        assert len(kept) <= budget and text.startswith(kept) and len(kept) + more == len(text)
        assert len(kept) in ends


def test_a_token_longer_than_the_budget_is_left_out_whole() -> None:
    assert clipped('["' + "x" * 50 + '"]', 10) == ("[", 53)
    assert clipped("[12345, 67890]", 10) == ("[12345,", 7)


def test_a_text_within_the_budget_is_kept_whole() -> None:
    assert clipped('{"a": 1}', 8) == ('{"a": 1}', 0)
