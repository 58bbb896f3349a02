"""Benchmarks of distribute: throughput, connections, generation, server cost, browser overhead.

Every benchmark is a module runnable on its own (``python -m benchmarks.throughput``); ``python -m
benchmarks`` (``make bench``) runs them all. Each one starts the server under test as a subprocess
on 127.0.0.1, drives it with load generators in other processes (`benchmarks.loadclient`), and
replaces its own section of BENCHMARKS.md with its figures (medians of at least three runs), the
date, the machine and the exact command. Shared plumbing lives in `benchmarks.common`.
"""
