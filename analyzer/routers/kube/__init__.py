"""Routers that change Kubernetes objects: shared plumbing (objects.py) and one module per
provider."""
