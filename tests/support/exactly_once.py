"""The check that a seed campaign computed through several server processes on one PostgreSQL is
complete with every dataset answered exactly once, through the API and in the database itself."""

from __future__ import annotations

from typing import Any

import psycopg2

from tests.conftest import SEED_ANSWER

__all__ = ["assert_seed_answered_exactly_once"]


def assert_seed_answered_exactly_once(
    database: str, campaign_id: int, campaign: dict[str, Any], rows: list[dict[str, Any]]
) -> None:
    """`campaign` (the API's view) is complete with its 100 datasets done; `rows` (its results, empty
    ones included) hold the exact answer, one per dataset; the database agrees: no dataset with two
    result rows, none left open."""
    assert campaign["status"] == "complete", campaign
    assert campaign["datasets"]["done"] == campaign["datasets"]["total"] == 100, campaign["datasets"]
    assert sorted(n for row in rows for n in row["result"] or ()) == SEED_ANSWER
    assert len(rows) == len({row["dataset_id"] for row in rows}) == 100
    with psycopg2.connect(database) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT dataset FROM result WHERE campaign = %s GROUP BY dataset HAVING COUNT(*) > 1", (campaign_id,)
        )
        assert cursor.fetchall() == []
        cursor.execute("SELECT COUNT(*) FROM dataset WHERE campaign = %s AND state <> 'done'", (campaign_id,))
        assert cursor.fetchone() == (0,)
    connection.close()
