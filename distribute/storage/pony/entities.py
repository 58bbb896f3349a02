# mypy: disallow-subclassing-any=False
# (Pony is untyped: every entity subclasses `db.Entity`, which is Any to mypy.)
"""The database schema: Pony entities, bound to SQLite or PostgreSQL by `define_entities(db)`.

Table and column names are spelled out (lower case, no quoting needed) because the hot paths in
`distribute.storage.pony.sql` address them with hand-written SQL. Times on the hot tables are float
epoch seconds so that raw SQL needs no driver-specific date handling.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pony.orm import Database, LongStr, Optional, PrimaryKey, Required, Set

__all__ = ["EXTRA_INDEXES", "MIGRATIONS", "SCHEMA_VERSION", "define_entities"]

SCHEMA_VERSION = 4

# Schema steps for databases made by an older version, by the version they start from. New tables
# are created by Pony (generate_mapping); new columns of existing tables are added here.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "ALTER TABLE campaign ADD COLUMN comparator TEXT",
        "ALTER TABLE dataset ADD COLUMN expected {bytes}",
        "ALTER TABLE result ADD COLUMN status TEXT NOT NULL DEFAULT 'accepted'",
        "ALTER TABLE result ADD COLUMN identity TEXT",
    ),
    2: ("ALTER TABLE account ADD COLUMN display_name TEXT NOT NULL DEFAULT ''",),
    # Version 4 also has new tables (volunteers' claims and listings, sites), made by generate_mapping, and
    # the result_stream, result_by_identity and result_by_site indexes of EXTRA_INDEXES.
    3: (
        "ALTER TABLE dataset ADD COLUMN checkpoint {bytes}",
        "ALTER TABLE campaign ADD COLUMN is_open BOOLEAN NOT NULL DEFAULT FALSE",
        "ALTER TABLE campaign ADD COLUMN kernel_version INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE campaign ADD COLUMN kernel_floor INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE result ADD COLUMN kernel_version INTEGER NOT NULL DEFAULT 1",
        # Results stored before the result stream existed get seq 0: they come first in it.
        "ALTER TABLE result ADD COLUMN stream_seq BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE result ADD COLUMN site INTEGER",  # the registered site the broker verified
        "ALTER TABLE account ADD COLUMN admin BOOLEAN NOT NULL DEFAULT FALSE",
        # Campaigns made before review existed were served to everyone: they stay approved.
        "ALTER TABLE campaign ADD COLUMN review TEXT NOT NULL DEFAULT 'approved'",
        "ALTER TABLE campaign ADD COLUMN review_reason TEXT NOT NULL DEFAULT ''",
    ),
}

# Pony cannot express an index with the primary key in it; leasing needs (campaign, state, id) so
# that "the oldest N pending datasets of campaign C" is an index range scan, not a sort.
EXTRA_INDEXES = (
    "CREATE INDEX IF NOT EXISTS dataset_lease ON dataset (campaign, state, id)",
    "CREATE INDEX IF NOT EXISTS dataset_expiry ON dataset (state, lease_until)",
    "CREATE INDEX IF NOT EXISTS result_by_campaign ON result (campaign, dataset, id)",
    # The result stream pages by (stream_seq, id) within a campaign (see `queries.result_stream`).
    "CREATE INDEX IF NOT EXISTS result_stream ON result (campaign, stream_seq, id)",
    # Only trusted (unreplicated) results are looked up by worker, to re-check them when it is flagged:
    # a partial index costs nothing on the hot path of replication 1.
    "CREATE INDEX IF NOT EXISTS result_by_site ON result (site) WHERE site IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS result_trusted ON result (identity) WHERE status = 'trusted'",
    # Volunteers' credit is summed per identity (the card, an account's claimed identities).
    "CREATE INDEX IF NOT EXISTS result_by_identity ON result (identity, campaign)",
)


def define_entities(db: Database) -> dict[str, Any]:
    """Declare every entity on `db` (not yet bound) and return them by name."""

    class Meta(db.Entity):
        _table_ = "meta"
        key = PrimaryKey(str)
        value = Required(str)

    class User(db.Entity):
        _table_ = "account"
        email = Required(str, unique=True)
        password_hash = Optional(str, nullable=True)
        created = Required(datetime)
        display_name = Optional(str, default="")  # how the embed card names the owner; "": nobody
        admin = Required(bool, default=False)  # an operator (reviews campaigns, sees the admin pages)
        tokens = Set("ApiToken")
        campaigns = Set("Campaign")
        web_sessions = Set("WebSession")
        password_resets = Set("PasswordReset")
        email_verification = Optional("EmailVerification")  # a row: its e-mail address is not verified yet

    class ApiToken(db.Entity):
        _table_ = "api_token"
        user = Required(User)
        token_hash = Required(str, unique=True)
        name = Optional(str)
        created = Required(datetime)
        revoked = Required(bool, default=False)

    class Campaign(db.Entity):
        _table_ = "campaign"
        owner = Required(User)
        name = Required(str)
        description = Optional(LongStr)
        kernel = Required(LongStr)
        static_dataset = Optional(LongStr)
        generator = Optional(LongStr)  # "" for an open campaign: its owner sends the datasets
        priority = Required(int, default=0)
        weight = Required(float, default=1.0)
        replication = Required(int, default=1)
        task_timeout = Required(float)
        status = Required(str)
        generation_error = Optional(LongStr, nullable=True)
        deleted = Required(bool, default=False)
        created = Required(datetime)
        content_hash = Required(str)
        generated = Required(int, size=64, default=0)
        compute_ms = Required(float, default=0.0)
        comparator = Optional(LongStr, nullable=True)
        is_open = Required(bool, default=False)  # an open campaign still taking its owner's datasets
        kernel_version = Required(int, default=1)
        kernel_floor = Required(int, default=1)  # results of an older kernel version leave their dataset pending
        review = Required(str, default="approved")  # models.Review
        review_reason = Optional(str, default="")  # why it was rejected
        datasets = Set("Dataset")
        results = Set("Result")
        kernel_errors = Set("KernelError")

    class Dataset(db.Entity):
        _table_ = "dataset"
        campaign = Required(Campaign)
        seq = Required(int, size=64)
        payload = Required(bytes)
        state = Required(str)
        lease_owner = Optional(str, nullable=True)
        lease_until = Optional(float, nullable=True)
        errors = Required(int, default=0)
        expected = Optional(bytes, nullable=True)
        checkpoint = Optional(bytes, nullable=True)  # the latest state a reissued task resumes from
        results = Set("Result")
        kernel_errors = Set("KernelError")

    class Result(db.Entity):
        _table_ = "result"
        dataset = Required(Dataset)
        campaign = Required(Campaign)
        payload = Optional(bytes, nullable=True)
        compute_ms = Required(float)
        worker = Required(str)
        host = Optional(str, nullable=True)
        created = Required(float)
        status = Required(str, default="accepted")
        identity = Optional(str, nullable=True)
        kernel_version = Required(int, default=1, sql_default="1")  # as the migration's column
        # Its place in the result stream: the writing transaction's id on PostgreSQL, a commit counter on
        # SQLite (see `storage.stream.ResultStreamStore`).
        stream_seq = Required(int, size=64, default=0, sql_default="0")
        site = Optional(int, nullable=True)  # the registered site the broker verified (not a foreign key)

    class WorkerRecord(db.Entity):
        _table_ = "worker_record"
        key = PrimaryKey(str)
        agreed = Required(int, size=64, default=0)
        disagreed = Required(int, size=64, default=0)
        flagged = Required(bool, default=False)
        updated = Required(float)

    class KernelError(db.Entity):
        _table_ = "kernel_error"
        campaign = Required(Campaign)
        dataset = Optional(Dataset, nullable=True)
        message = Required(LongStr)
        stack = Optional(LongStr)
        count = Required(int, default=1)
        first_seen = Required(float)
        last_seen = Required(float)

    class WebSession(db.Entity):
        _table_ = "web_session"
        user = Required(User)
        token_hash = Required(str, unique=True)
        csrf_token = Required(str)
        created = Required(datetime)
        expires = Required(datetime, index=True)
        user_agent = Optional(str)

    class PasswordReset(db.Entity):
        _table_ = "password_reset"
        user = Required(User)
        token_hash = Required(str, unique=True)
        created = Required(datetime)
        expires = Required(datetime)
        used = Required(bool, default=False)

    class EmailVerification(db.Entity):
        # A table of its own rather than a column of `account`: a database made before address
        # verification has no rows here, so its accounts count as verified with no migration step.
        _table_ = "email_verification"
        user = Required(User, unique=True)
        token_hash = Optional(str, unique=True, nullable=True)  # None: no link mailed yet
        expires = Required(datetime)

    class GeneratorLease(db.Entity):
        _table_ = "generator_lease"
        campaign = PrimaryKey(int)  # not a foreign key: the row outlives nothing and joins nothing
        owner = Required(str)
        until = Required(float)

    class Presence(db.Entity):
        # A table of its own, created on an older database by generate_mapping: no migration step.
        _table_ = "presence"
        process = PrimaryKey(str)
        workers = Required(LongStr)  # JSON: campaign id -> connected workers
        heartbeat = Required(float)

    class VolunteerClaim(db.Entity):
        # Tables of their own, created on an older database by generate_mapping: no migration step.
        _table_ = "volunteer_claim"
        identity = PrimaryKey(str)  # the broker's random id: a secret, never shown
        account = Required(int, size=64, index=True)  # not a foreign key, like generator_lease.campaign
        created = Required(float)

    class VolunteerListing(db.Entity):
        _table_ = "volunteer_listing"
        account = PrimaryKey(int, size=64)  # a row: this account's display name appears on leaderboards

    class Site(db.Entity):
        # A table of its own, created on an older database by generate_mapping: no migration step.
        _table_ = "site"
        owner = Required(int, index=True)  # the account's id (not a foreign key: account deletion drops sites itself)
        origin = Required(str)
        key = Required(str, unique=True)
        token = Required(str)
        verified = Required(bool, default=False)
        policy = Required(str, default="any")
        allowlist = Optional(LongStr)  # JSON list of ids
        max_throttle = Required(str, default="high")
        created = Required(float)

    return {
        "VolunteerClaim": VolunteerClaim,
        "VolunteerListing": VolunteerListing,
        "Site": Site,
        "Presence": Presence,
        "WebSession": WebSession,
        "PasswordReset": PasswordReset,
        "EmailVerification": EmailVerification,
        "GeneratorLease": GeneratorLease,
        "Meta": Meta,
        "User": User,
        "ApiToken": ApiToken,
        "Campaign": Campaign,
        "Dataset": Dataset,
        "Result": Result,
        "KernelError": KernelError,
        "WorkerRecord": WorkerRecord,
    }
