"""Where alerts and metrics go: Sentry (core), Prometheus (optional extra)."""
