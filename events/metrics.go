package events

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are a subscriber's Prometheus metrics. Every metric has a service label; per-event
// metrics also have the event type.
type Metrics struct {
	handled      *prometheus.CounterVec
	failed       *prometheus.CounterVec
	redelivered  *prometheus.CounterVec
	deadLettered *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	pending      *prometheus.GaugeVec
	// deadlineExceeded is the deadline watchdog's (services/history), here so that it reaches
	// every process's /metrics with the rest.
	deadlineExceeded *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them on reg (never the global default registry:
// the caller owns it). It fails if they are registered there already.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "troupe_events_handled_total", Help: "Events whose handler returned, by outcome (ok, error, terminal).",
		}, []string{"service", "type", "outcome"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "troupe_events_failed_total", Help: "Handler runs that returned an error or panicked.",
		}, []string{"service", "type"}),
		redelivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "troupe_events_redelivered_total", Help: "Deliveries of an event after its first.",
		}, []string{"service", "type"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "troupe_events_dead_lettered_total", Help: "Events moved to the dead-letter stream, by cause: malformed, max_deliveries, or the terminal error's reason code.",
		}, []string{"service", "type", "cause"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "troupe_handler_duration_seconds", Help: "Handler latency.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"service", "type"}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "troupe_consumer_pending", Help: "Events matching the service's consumer not yet delivered.",
		}, []string{"service"}),
		deadlineExceeded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "troupe_flows_deadline_exceeded_total", Help: "Revisions the deadline watchdog ended with release.failed deadline_exceeded, by the stage that did not answer in time.",
		}, []string{"service", "stage"}),
	}
	for _, c := range []prometheus.Collector{m.handled, m.failed, m.redelivered, m.deadLettered, m.duration, m.pending, m.deadlineExceeded} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// DeadlineExceeded counts a revision that service (the deadline watchdog) ended with
// release.failed deadline_exceeded because stage did not answer by its deadline. A nil m counts
// nothing.
func (m *Metrics) DeadlineExceeded(service, stage string) {
	if m != nil {
		m.deadlineExceeded.WithLabelValues(service, stage).Inc()
	}
}
