"""Benchmarks as library code: `smile2pay bench ...` and the scripts in benchmarks/ call these."""
