"""Health, readiness and Prometheus metrics of the running service (docs/operations.md)."""
