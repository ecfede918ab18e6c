"""Shared test support: the Kubernetes API server test double and schema validation."""
