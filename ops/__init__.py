"""Operations: Prometheus metrics, structlog logging, health endpoints, status views.

Import from the defining modules: `metrics` (`PrometheusObserver`, the runner's hook counters)
and `collector` (its state read at scrape time), `http` (`OpsServer`, the tiny HTTP server),
`health` (readiness and the runner's endpoints), `service` (`ObservedRunner`: a runner with all
of it attached), `logging` (`configure_logging`) and `status` (the `mabeam status` view). The
deployment files live beside them: `nats/` (the cluster's server config), `prometheus.yml` and
`grafana/` (provisioning and the dashboard).
"""
