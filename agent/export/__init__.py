"""Exporters: /metrics (Prometheus), OTLP, /health, and the HTTP endpoint with its TLS and auth; they only read snapshots."""
