"""`make demo`: the local stack (sample service, nginx, Prometheus, load) and its live view."""
