// Package monitoring holds what an operator watches troupe with, and the test that holds it to
// the services' real metrics:
//
//   - alerts.yaml: the alerting rules, a prometheus-operator PrometheusRule (its spec is a plain
//     Prometheus rule file): revisions ended at their deadline, dead letters, handlers failing, a
//     consumer stalled or far behind. The one place the rules are written.
//   - grafana-dashboard.json: a Grafana dashboard of the same metrics (data source, namespace and
//     service variables).
//
// The chart (../charts/troupe, prometheusRule.enabled and grafanaDashboard.enabled) ships both
// from files/monitoring/: a chart can read only files inside it (Helm's .Files), and the chart is
// embedded for `troupe install` as it is, so it carries a copy, written by `make generate` (this
// package's generate directive) and checked by TestChartCarriesTheFiles, as the chart README's
// values table is. Edit the files here, never the copies; the chart's PrometheusRule takes
// alerts.yaml's spec whole, so there is no second list of expressions.
//
// The test (monitoring_test.go) runs troupe services as their processes do (serve.Run: their flags,
// registry and /metrics), on an embedded NATS server: the real renderer, history with its deadline
// watchdog, and subscribers whose handlers hang or fail. It scrapes every /metrics over HTTP once a
// "minute" of a simulated clock (each scrape real, its timestamp the clock's), loads the samples
// into Prometheus's own PromQL engine (github.com/prometheus/prometheus/promql on an in-memory
// storage: Prometheus's TSDB and rules packages import its cloud service discovery), and evaluates
// every rule at every step as its rule manager does, `for` included: nothing fires while the
// services are healthy, every alert fires once its fault is real, and each resolves after the fault
// is gone. Every expression of the rules and the dashboard must parse, name only metrics the
// services expose and labels they or the scrape give, and every dashboard panel must show data
// while the faults last: renaming a metric breaks the test.
package monitoring

//go:generate cp alerts.yaml grafana-dashboard.json ../charts/troupe/files/monitoring/
