"""The sandbox: untrusted JavaScript (generators, kernels, comparators) in mini-racer child processes.

Every child starts confined (`confine`: rlimits, no network, an unprivileged user when the server is
root, a seccomp filter) with an empty environment, and the parent trusts none of its answers (counts,
sizes and frame lengths are checked on what arrives). The server's pool runs V8 with ``--jitless``
(setting `sandbox_jitless`; BENCHMARKS.md, "V8 without its JIT"); the headless worker keeps the JIT.

Kept free of imports: a child's start (`confine`) imports this package before the child has
capped its memory.
"""
