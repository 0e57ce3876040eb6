package events_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
)

// run starts a subscriber in the background; the returned stop ends it and waits for Start to
// return.
func run(t *testing.T, js jetstream.JetStream, cfg events.SubscriberConfig, h events.Handler) (stop func()) {
	t.Helper()
	s, err := events.NewSubscriber(js, cfg, h)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()
	select {
	case <-s.Ready():
	case err := <-done:
		t.Fatalf("subscriber %s stopped before it was ready: %v", cfg.Service, err)
	case <-time.After(10 * time.Second):
		t.Fatalf("subscriber %s not ready after 10s", cfg.Service)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(30 * time.Second):
				t.Error("subscriber did not stop within 30s")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func publishRequest(t *testing.T, pub *events.Publisher, r events.Release) event.Event {
	t.Helper()
	e, err := events.NewEvent("troupe/test", events.TypeRequested, r,
		events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: "charts/" + r.Name}}})
	require.NoError(t, err)
	_, err = pub.Publish(t.Context(), e)
	require.NoError(t, err)
	return e
}

// readAll returns every message of stream on filter, without consuming anything durable.
func readAll(t *testing.T, js jetstream.JetStream, stream, filter string) []jetstream.Msg {
	t.Helper()
	out, err := tryReadAll(t.Context(), js, stream, filter)
	require.NoError(t, err)
	return out
}

// tryReadAll is readAll for callers that retry while a stream moves between peers.
func tryReadAll(ctx context.Context, js jetstream.JetStream, stream, filter string) ([]jetstream.Msg, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return nil, err
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	if n == 0 {
		return nil, nil
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		return nil, err
	}
	batch, err := c.Fetch(int(n), jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		return nil, err
	}
	var out []jetstream.Msg
	for m := range batch.Messages() {
		out = append(out, m)
	}
	if err := batch.Error(); err != nil {
		return nil, err
	}
	if uint64(len(out)) != n {
		return nil, fmt.Errorf("read %d of the %d messages on %s", len(out), n, filter)
	}
	return out, nil
}

func deadLetters(t *testing.T, js jetstream.JetStream) []events.DeadLetter {
	t.Helper()
	var out []events.DeadLetter
	for _, m := range readAll(t, js, events.Names{}.DeadLetterStream(), events.Names{}.DeadLetterSubjects()) {
		out = append(out, events.ParseDeadLetter(m.Headers(), m.Data()))
	}
	return out
}

func releaseEvents(t *testing.T, js jetstream.JetStream, typ string) []event.Event {
	t.Helper()
	f, err := events.Names{}.TypeFilter(typ)
	require.NoError(t, err)
	var out []event.Event
	for _, m := range readAll(t, js, events.StreamName, f) {
		e, err := events.Names{}.Decode(m.Subject(), m.Headers(), m.Data())
		require.NoError(t, err)
		out = append(out, e)
	}
	return out
}

// seen counts handler calls per event id.
type seen struct {
	mu sync.Mutex
	n  map[string]int
}

func newSeen() *seen { return &seen{n: map[string]int{}} }

func (s *seen) add(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n[id]++
	return s.n[id]
}

func (s *seen) count(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n[id]
}

func (s *seen) distinct() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.n)
}

var errFlaky = errors.New("flaky")

func fastRetry(cfg events.SubscriberConfig) events.SubscriberConfig {
	cfg.Backoff = []time.Duration{20 * time.Millisecond}
	return cfg
}

func rel(i int) events.Release {
	return events.Release{Namespace: "test", Name: fmt.Sprintf("app-%d", i)}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// metricValue sums the samples of metric name whose label has value.
func metricValue(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					switch {
					case m.Counter != nil:
						sum += m.GetCounter().GetValue()
					case m.Gauge != nil:
						sum += m.GetGauge().GetValue()
					}
				}
			}
		}
	}
	return sum
}
