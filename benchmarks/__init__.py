"""The benchmark harness: `make bench` runs `python -m benchmarks.bench` (see its docstring)."""
