"""The project's files speak of the product, its versions and dates, never of how the work on it was organised.

Every tracked file is scanned (code, comments, docs, tests, benchmarks/, BENCHMARKS.md, templates, the
Makefile): numbered tickets, numbered work items and "this session" mean nothing to a user reading the file
or the public /benchmarks page. A few phrases that use the same words for the product itself are allowed.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
THIS_FILE = Path(__file__).resolve().relative_to(REPO).as_posix()  # names the phrases it forbids

FORBIDDEN = re.compile(
    r"\bissues?\b|session's|\bthis session\b|\bwork items?\b|\bitems? [0-9]",
    re.IGNORECASE,
)

# The same words about the product: removed from a line before it is scanned.
ALLOWED = re.compile(
    r"GitHub issues?"  # where users report bugs
    r"|\bissues? (a|an|one|new|the)\b"  # the verb: a server issues a token
    r"|\b(its|the) session's (CSRF|own|cluster|cookie)",  # a signed-in user's session, pytest's session
    re.IGNORECASE,
)

SKIPPED_FILES = {THIS_FILE, "embed/package-lock.json"}  # the lock file is npm's, not prose


def tracked_text_files() -> list[str]:
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
    return [name for name in listing.stdout.decode().split("\0") if name and name not in SKIPPED_FILES]


def process_phrases(text: str) -> list[tuple[int, str]]:
    """(line number, line) for every line that still names the work process once allowed phrases are removed."""
    hits = []
    for number, line in enumerate(text.splitlines(), 1):
        if FORBIDDEN.search(ALLOWED.sub("", line)):
            hits.append((number, line.strip()))
    return hits


def test_the_scan_catches_process_phrases_and_lets_product_phrases_through() -> None:
    caught = [
        "How fast it is (issue 8).",
        "plus this session's items 6-8",
        "the work item list",
        "before item 7",
        "see the hardening Issue",
    ]
    allowed = [
        "report bugs on GitHub issues",
        "the token issued at sign-up, a reissued task",
        "a signed-in form carries its session's CSRF token",
        "the items of the array",
    ]
    assert [line for line in caught if not process_phrases(line)] == []
    assert [line for line in allowed if process_phrases(line)] == []


def test_no_tracked_file_speaks_of_the_work_process() -> None:
    files = tracked_text_files()
    assert "BENCHMARKS.md" in files and "Makefile" in files  # the scan sees the tree
    found = []
    for name in files:
        path = REPO / name
        if not path.is_file():
            continue  # deleted in the work tree, not yet in the index
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # images and other binary files
        found += [f"{name}:{number}: {line[:160]}" for number, line in process_phrases(text)]
    assert found == [], "reword in product terms (versions, dates, feature names):\n" + "\n".join(found)
