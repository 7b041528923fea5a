"""Benchmarks that compare hindsight with a baseline in the same run."""
