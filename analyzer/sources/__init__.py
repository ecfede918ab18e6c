"""Metric sources: where a tick's `Samples` come from (Prometheus, simulation, recorded data)."""
