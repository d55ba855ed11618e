"""Measured speed, memory and learning results of the project (see benchmarks/README.md)."""
