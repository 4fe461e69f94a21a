"""Reproducible speed measurements: ``python -m benchmarks`` runs them all (see __main__.py)."""
