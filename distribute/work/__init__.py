"""Work: producing datasets, leasing them to workers, and deciding which results count.

`dispatcher` owns the queues and task leases, `generation` runs each campaign's generator into
storage, `verification` is the pure core of result verification, `replicas` and `verifier` apply it.
"""
