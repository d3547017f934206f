"""Benchmarks (make bench); not part of the deployment package."""
