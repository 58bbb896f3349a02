"""The Pony ORM storage backend: SQLite and PostgreSQL."""
