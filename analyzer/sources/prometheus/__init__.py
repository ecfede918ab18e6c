"""The Prometheus metric source: PromQL building, the HTTP client, query coalescing, presets."""
