"""SQLite's durability level: NORMAL by default, FULL (or another level) from the database URL."""

from __future__ import annotations

from pathlib import Path

import pytest
from pony.orm import Database, db_session

from distribute.errors import SettingsError
from distribute.storage.pony.connect import bind, sqlite_synchronous


def pragma_synchronous(url: str) -> int:
    db = Database()
    bind(db, url)
    with db_session:
        level = db.execute("PRAGMA synchronous").fetchone()[0]
        journal = db.execute("PRAGMA journal_mode").fetchone()[0]
    db.disconnect()
    assert journal == "wal"
    return level


def test_sqlite_runs_in_wal_mode_with_synchronous_normal_by_default(tmp_path: Path) -> None:
    assert pragma_synchronous(f"sqlite:///{tmp_path / 'a.db'}") == 1  # NORMAL


def test_synchronous_full_is_chosen_in_the_database_url(tmp_path: Path) -> None:
    assert pragma_synchronous(f"sqlite:///{tmp_path / 'b.db'}?synchronous=full") == 2  # FULL
    assert (tmp_path / "b.db").exists()  # the query is not part of the file name


@pytest.mark.parametrize("url", ["sqlite:///x.db?synchronous=sometimes", "sqlite:///x.db?journal=off"])
def test_a_bad_database_url_parameter_is_a_clear_settings_error(url: str) -> None:
    with pytest.raises(SettingsError, match="in the database URL"):
        sqlite_synchronous(url)
