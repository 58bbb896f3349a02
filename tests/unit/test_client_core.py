"""The client's sans-I/O core with explicit inputs: the event-stream parser, the cursor, `map`'s
reorder book, answers turned into errors, and uploads built from strings, paths and values."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from distribute.client import BadRequest, Conflict, ServerError, TooManyRequests
from distribute.client.core import MapBook, Result, ResultCursor, ServerEvent, SSEParser, checked, create_call
from distribute.client.progress import CampaignProgress


def result(number: int) -> Result:
    return Result(dataset_number=number, dataset={"i": number}, value=number * 2, cursor=f"r{number}")


def parse(text: str) -> list[tuple[str, object, str | None]]:
    parser = SSEParser()
    events = [parser.feed(line) for line in text.split("\n")]
    return [(e.name, e.data, e.id) for e in events if e is not None]


def test_the_event_parser_reads_names_ids_and_json_data_and_skips_comments() -> None:
    stream = ': keepalive\n\nevent: result\nid: r7\ndata: {"a": 1}\n\nevent: progress\ndata: {"results":\ndata: 3}\n\n'
    assert parse(stream) == [("result", {"a": 1}, "r7"), ("progress", {"results": 3}, None)]


def test_the_cursor_follows_result_events_and_ends_at_complete() -> None:
    cursor = ResultCursor(None)
    row = {"dataset_number": 4, "dataset": 1, "result": 2, "cursor": "r9"}
    assert cursor.event(ServerEvent("result", row, "r9")) == Result(4, 1, 2, "r9")
    assert cursor.cursor == "r9" and not cursor.ended
    cursor.event(ServerEvent("complete", {"status": "complete"}, None))
    assert cursor.ended


def test_a_page_moves_the_cursor_and_says_when_it_reached_the_end() -> None:
    cursor = ResultCursor("r1")
    rows = [{"dataset_number": 2, "result": None, "cursor": "r2"}]
    assert [r.dataset_number for r in cursor.page({"results": rows, "cursor": "r2", "complete": True})] == [2]
    assert (cursor.cursor, cursor.ended) == ("r2", True)


def test_the_ordered_book_holds_results_until_the_earlier_ones_came() -> None:
    book = MapBook(ordered=True)
    book.accepted({"added": 3, "first": 1, "last": 3})
    assert book.receive(result(2)) == []
    assert book.receive(result(3)) == []
    assert [r.dataset_number for r in book.receive(result(1))] == [1, 2, 3]
    book.closed = True
    assert book.done()


def test_the_unordered_book_hands_out_at_once_and_names_what_never_came() -> None:
    book = MapBook(ordered=False)
    book.accepted({"added": 3, "first": 1, "last": 3})
    assert [r.dataset_number for r in book.receive(result(3))] == [3]
    assert book.outstanding() == 2
    assert book.finish() == ([], [1, 2])


def test_the_ordered_book_at_the_end_hands_out_what_it_held_behind_a_failed_dataset() -> None:
    book = MapBook(ordered=True)
    book.accepted({"added": 3, "first": 1, "last": 3})
    book.receive(result(1))
    book.receive(result(3))
    held, missing = book.finish()
    assert ([r.dataset_number for r in held], missing) == ([3], [2])


@pytest.mark.parametrize(
    ("status", "kind"), [(400, BadRequest), (409, Conflict), (429, TooManyRequests), (503, ServerError)]
)
def test_an_error_answer_raises_its_kind_with_the_servers_message(status: int, kind: type[Exception]) -> None:
    response = httpx.Response(status, json={"error": "campaign 3 is closed"}, headers={"Retry-After": "2"})
    with pytest.raises(kind, match="campaign 3 is closed") as raised:
        checked(response)
    assert raised.value.status == status  # type: ignore[attr-defined]
    if status == 429:
        assert raised.value.retry_after == 2.0  # type: ignore[attr-defined]


def test_sources_go_up_as_text_paths_or_json_and_options_as_form_fields(tmp_path: Path) -> None:
    (tmp_path / "sum.js").write_text("kernel text")
    call = create_call(tmp_path / "sum.js", "generator text", {"k": 1}, {"open": True, "priority": 2, "x": None})
    assert call.files is not None and call.data is not None
    assert call.files["kernel"] == ("sum.js", b"kernel text")
    assert call.files["generator"][1] == b"generator text"
    assert call.files["static_dataset"][1] == b'{"k": 1}'
    assert call.data == {"open": "true", "priority": "2", "name": "sum"}


def test_a_refused_stream_raises_with_the_servers_words() -> None:
    cursor = ResultCursor(None)
    with pytest.raises(TooManyRequests, match="too many open event streams"):
        cursor.event(ServerEvent("error", {"error": "too many open event streams for this account"}, None))


def test_the_progress_bar_shows_answered_of_total_and_the_state() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=150)
    info = {
        "id": 3,
        "status": "running",
        "state": {"label": "running"},
        "datasets": {"done": 10, "failed": 2, "total": 40},
        "results": 10,
        "errors": 5,
    }
    with CampaignProgress(True, console=console) as bar:
        bar.show(info)
    text = out.getvalue()
    assert "campaign 3" in text and "12/40" in text and "5 kernel errors" in text


def test_the_event_parser_cuts_events_out_of_bytes_split_anywhere_and_with_crlf() -> None:
    stream = b'retry: 2000\r\n\r\n: keepalive\r\n\r\nid: c1.2\r\nevent: result\r\ndata: {"a": 1}\r\n\r\nevent: complete\ndata: {}\n\n'
    for cut in range(len(stream)):
        parser = SSEParser()
        events = parser.chunk(stream[:cut]) + parser.chunk(stream[cut:])
        assert [(e.name, e.data, e.id) for e in events] == [("result", {"a": 1}, "c1.2"), ("complete", {}, None)], cut
