"""Operations: Prometheus metrics, structlog logging, health endpoints, status views."""
