"""Shared test support: the real Kubernetes API server (cluster, fixtures, objects, deploy/'s
RBAC), the fault proxy in front of it, schema validation for offline objects, the fixed clock
and the checks for required tools."""
