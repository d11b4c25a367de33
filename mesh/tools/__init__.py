"""Tools that run the product but are not the product: `mesh bench` (and the key/value
baselines it compares against), the discovery benchmark, and `mesh demo`.

Nothing in mesh/ outside this package imports it; cli/ and benchmarks/ do.
"""
