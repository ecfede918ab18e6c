"""The running engine: one tick (engine), the scheduler, the store, the HTTP API, the engine's
own metrics, notifications and Kubernetes Events."""
