"""The benchmark's workloads, one module each; bench/harness.py runs them."""
