"""Astara's benchmarks: `python -m bench.run` (or `make bench`).

Each benchmark measures a figure through real Astara objects and, in the same
run, a baseline built from bare Linux parts, and prints one JSON object per
case with both and their ratio. See docs/performance.md.
"""
