"""Speed measurements: each module compares the project's implementation with a naive baseline in one process
and prints ratios (never asserted in tests). Run all: `make bench`; one: `python -m benchmarks.<name>`."""
