"""Experiment drivers shared by benchmarks and effect tests: short real runs of a method and its controls.

They live outside the package because only benchmarks and tests use them.
"""
