"""Work: producing datasets, leasing them to workers, and deciding which results count.

`dispatcher` owns the task leases and the group commit and is the only one to change the queues
(`queues`, the per-campaign queues of leased datasets); `verifier` owns replicas (`replicas`),
spot checks and trust, and returns its decisions (`decisions`) for the dispatcher to apply;
`verification` is the pure core of result verification and `comparators` runs owners' comparators
in the sandbox; `generation` runs each campaign's generator into storage.
"""
