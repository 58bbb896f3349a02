"""The CSV download's layout: plain-object results spread over `result.KEY` columns, compute times rounded
to 0.1 ms, and every cell a spreadsheet would run as a formula made inert."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Any

from distribute.campaigns.export import CSV_COLUMNS, ENCODERS, MAX_RESULT_COLUMNS, CsvLayout


def row(result: Any, number: int = 1, compute_ms: float = 1.0, host: str = "") -> dict[str, Any]:
    return {
        "dataset_id": 100 + number,
        "dataset_number": number,
        "dataset": {"i": number},
        "result": result,
        "compute_ms": compute_ms,
        "worker": "w",
        "host": host,
        "created": "2026-01-01T00:00:00+00:00",
        "verification": "accepted",
        "kernel_version": 1,
    }


async def as_csv(*rows: dict[str, Any]) -> list[dict[str, str]]:
    """The download of these rows, parsed as a spreadsheet would."""
    encode, mimetype = ENCODERS["csv"]

    async def source() -> AsyncIterator[dict[str, Any]]:
        for one in rows:
            yield one

    body = b"".join([chunk async for chunk in encode(source)]).decode()
    assert mimetype == "text/csv"
    return list(csv.DictReader(io.StringIO(body)))


async def test_plain_object_results_become_prefixed_columns_in_first_seen_order() -> None:
    lines = await as_csv(row({"x": 1, "host": "h"}, 1), row({"y": 2.5, "x": 3}, 2))
    assert list(lines[0]) == [*CSV_COLUMNS[:3], "result.x", "result.host", "result.y", *CSV_COLUMNS[4:]]
    assert [(r["result.x"], r["result.host"], r["result.y"]) for r in lines] == [("1", "h", ""), ("3", "", "2.5")]
    assert [r["host"] for r in lines] == ["", ""]  # the worker's host column is not the result's "host" key


async def test_nested_values_are_json_in_their_cell_and_null_is_empty() -> None:
    (line,) = await as_csv(row({"list": [1, 2], "map": {"a": "é"}, "none": None, "flag": True}))
    assert (line["result.list"], line["result.map"]) == ("[1, 2]", '{"a": "é"}')
    assert (line["result.none"], line["result.flag"]) == ("", "true")


async def test_results_that_are_not_plain_objects_keep_a_json_result_column() -> None:
    lines = await as_csv(row([1, 2], 1), row("text", 2))
    assert "result" in lines[0] and not any(key.startswith("result.") for key in lines[0])
    assert [r["result"] for r in lines] == ["[1, 2]", '"text"']


async def test_mixed_results_fill_the_result_column_or_the_key_columns() -> None:
    lines = await as_csv(row({"x": 1}, 1), row(7, 2), row(None, 3))
    assert [(r["result"], r["result.x"]) for r in lines] == [("", "1"), ("7", ""), ("null", "")]


async def test_empty_results_leave_the_key_columns_of_flattened_results_empty() -> None:
    lines = await as_csv(row({"x": 1}, 1), row(None, 2))
    assert "result" not in lines[0]
    assert [r["result.x"] for r in lines] == ["1", ""]


def test_too_many_distinct_keys_keep_every_result_as_json() -> None:
    layout = CsvLayout.of([{f"k{i}": i} for i in range(MAX_RESULT_COLUMNS + 1)])
    assert layout.header() == list(CSV_COLUMNS)


async def test_compute_times_are_rounded_to_a_tenth_of_a_millisecond() -> None:
    lines = await as_csv(row(1, 1, compute_ms=2.7999999998137355), row(1, 2, compute_ms=0.04))
    assert [r["compute_ms"] for r in lines] == ["2.8", "0.0"]


async def test_dataset_numbers_are_a_column_beside_the_global_id() -> None:
    lines = await as_csv(row(1, 1), row(1, 2))
    assert [(r["dataset_id"], r["dataset_number"]) for r in lines] == [("101", "1"), ("102", "2")]


async def test_flattened_cells_a_spreadsheet_would_run_as_formulas_are_made_inert() -> None:
    formula = '=HYPERLINK("https://evil.example")'
    lines = await as_csv(row({"f": formula, "plus": "+1+1", "n": -5, "tab": "\tx", "neg": "-5"}, host="@SUM(A1)"))
    (line,) = lines
    assert (line["result.f"], line["result.plus"], line["result.tab"]) == ("'" + formula, "'+1+1", "'\tx")
    assert (line["result.n"], line["result.neg"], line["host"]) == ("-5", "-5", "'@SUM(A1)")


async def test_a_key_that_looks_like_a_formula_gets_an_inert_column_name() -> None:
    (line,) = await as_csv(row({"=cmd": 1}))
    assert "result.=cmd" in line  # the prefix already keeps the header cell from starting with "="
