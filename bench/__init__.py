"""Benchmark harness: `bench/run` (see bench/harness.py). Not part of the service."""
