"""The sandbox: untrusted JavaScript (generators, kernels, comparators) in mini-racer child processes.

Kept free of imports: `python -m distribute.sandbox.child` imports this package before the child
has capped its memory.
"""
