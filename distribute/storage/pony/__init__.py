"""The Pony ORM storage backend, SQLite and PostgreSQL: `store.PonyStorage` implements `storage.base.Storage`.

`entities` is the schema, `connect` the binding and the storage threads, `sql` the batched hot paths,
`campaigns`, `accounts`, `queries`, `verdicts`, `generator_leases` and `presence` the rest of the calls.
"""
