"""Operations: Prometheus metrics, structlog logging, HTTP endpoints, status views, the dashboard.

Import from the defining modules: `metrics` (`PrometheusObserver`, the runner's hook counters)
and `collector` (its state read at scrape time), `http` (`OpsServer`: HTTP on aiohttp, with our
limits), `health` (readiness and the runner's endpoints), `service` (`ObservedRunner`: a runner
with all of it attached), `logging` (`configure_logging`), `status_view` (the `mabeam status`
view), `dashboard_state` and `dashboard` (`mabeam dashboard`: the live view and its web page,
`dashboard.html`). The deployment files live beside them: `nats/` (the cluster's server config),
`prometheus.yml` and `grafana/` (provisioning and the Grafana dashboard).
"""
