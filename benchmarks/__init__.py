"""Benchmarks and experiment drivers (not part of the installed package)."""
