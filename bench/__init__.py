"""Benchmarks of the deployed server, run against real local processes (see bench/RESULTS.md)."""
