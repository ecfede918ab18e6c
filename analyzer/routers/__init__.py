"""Traffic routers: one module per provider behind the `Router` protocol in base.py."""
