"""Benchmarks: `python -m benchmarks.<name>` prints a JSON summary against a naive baseline run in the same process."""
