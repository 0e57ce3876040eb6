package history_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/natstest"
	"github.com/troupe-dev/troupe/events/serve"
	"github.com/troupe-dev/troupe/services/history"
)

// troupe_flows_deadline_exceeded_total counts each revision the watchdog ended for its deadline
// once, by the stage that did not answer, however many replicas watch (each its own process, so
// its own registry); a revision that ends in time is not counted.
func TestDeadlineExceededMetric(t *testing.T) {
	_, _, js := natstest.Start(t)
	// Each replica's series of the metric, by service and stage.
	var replicas []func() map[[2]string]float64
	for range 3 {
		reg, m, err := serve.NewRegistry() // what a service process serves on /metrics
		require.NoError(t, err)
		svc, err := history.New(t.Context(), js, history.Options{Grace: 200 * time.Millisecond, Metrics: m})
		require.NoError(t, err)
		natstest.Run(t, svc)
		replicas = append(replicas, func() map[[2]string]float64 {
			mfs, err := reg.Gather()
			require.NoError(t, err)
			out := map[[2]string]float64{}
			for _, mf := range mfs {
				if mf.GetName() != "troupe_flows_deadline_exceeded_total" {
					continue
				}
				for _, m := range mf.GetMetric() {
					var key [2]string
					for _, l := range m.GetLabel() {
						switch l.GetName() {
						case "service":
							key[0] = l.GetValue()
						case "stage":
							key[1] = l.GetValue()
						}
					}
					out[key] += m.GetCounter().GetValue()
				}
			}
			return out
		})
	}
	counted := func() map[[2]string]float64 {
		sum := map[[2]string]float64{}
		for _, series := range replicas {
			for k, v := range series() {
				sum[k] += v
			}
		}
		return sum
	}
	w := &watchdogEnv{t: t, js: js, pub: events.NewPublisher(js, events.Names{})}

	fine := events.Release{Namespace: "ns", Name: "fine"}
	req := w.request(fine, time.Second)
	ready, err := events.Derive(req, "troupe/health", events.TypeReady, events.Ready{Objects: 1})
	require.NoError(t, err)
	w.publish(ready)
	late := events.Release{Namespace: "ns", Name: "late"}
	w.request(late, time.Second)

	ends := w.terminals(late, 1)
	require.Len(t, ends, 1)
	f, err := events.Data[events.Failed](ends[0])
	require.NoError(t, err)
	require.Equal(t, history.ReasonDeadlineExceeded, f.Reason)
	want := map[[2]string]float64{{history.WatchdogName, events.StageRender}: 1}
	require.Eventually(t, func() bool { return assert.ObjectsAreEqual(want, counted()) }, 5*time.Second, 20*time.Millisecond)
	time.Sleep(time.Second) // the other replicas' next ticks
	assert.Equal(t, want, counted(), "once, whichever replica ended it; nothing for the revision that ended in time")
	assert.Len(t, w.terminals(fine, 1), 1)
}

// failFirstFailed is JetStream whose first release.failed publish fails before it reaches the
// server: the watchdog claimed its end, then lost the publish (a timeout, a restart).
type failFirstFailed struct {
	jetstream.JetStream
	failed atomic.Bool
}

func (f *failFirstFailed) PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if strings.HasSuffix(msg.Subject, ".failed") && f.failed.CompareAndSwap(false, true) {
		return nil, errors.New("nats: timeout")
	}
	return f.JetStream.PublishMsg(ctx, msg, opts...)
}

// A release.failed the watchdog claimed but failed to publish is published, and counted, by its
// next try: the claimed end, not a new one.
func TestDeadlineExceededMetricAfterAFailedPublish(t *testing.T) {
	_, _, js := natstest.Start(t)
	reg, m, err := serve.NewRegistry()
	require.NoError(t, err)
	flaky := &failFirstFailed{JetStream: js}
	svc, err := history.New(t.Context(), flaky, history.Options{Grace: 200 * time.Millisecond, Metrics: m})
	require.NoError(t, err)
	natstest.Run(t, svc)
	w := &watchdogEnv{t: t, js: js, pub: events.NewPublisher(js, events.Names{})}
	late := events.Release{Namespace: "ns", Name: "late"}
	w.request(late, time.Second)

	require.Len(t, w.terminals(late, 1), 1)
	assert.True(t, flaky.failed.Load(), "the first publish failed")
	require.Eventually(t, func() bool {
		mfs, err := reg.Gather()
		require.NoError(t, err)
		for _, mf := range mfs {
			if mf.GetName() == "troupe_flows_deadline_exceeded_total" {
				return len(mf.GetMetric()) == 1 && mf.GetMetric()[0].GetCounter().GetValue() == 1
			}
		}
		return false
	}, 10*time.Second, 20*time.Millisecond, "counted once")
}
