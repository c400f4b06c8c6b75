"""Benchmarks (not tests): run with `uv run python -m bench.<name>`."""
