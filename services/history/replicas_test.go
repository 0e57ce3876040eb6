package history_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/historyapi"
	"github.com/troupe-dev/troupe/events/natstest"
	"github.com/troupe-dev/troupe/services/history"
)

// burst publishes, for each release at once, revisions requests each followed by what the
// renderer, applier and health publish (every third revision fails at health), without waiting
// for history: the events of the releases interleave in the stream.
func (e *env) burst(rels []events.Release, revisions int) {
	e.t.Helper()
	var wg sync.WaitGroup
	for _, rel := range rels {
		wg.Go(func() {
			for n := 1; n <= revisions; n++ {
				req := e.request(rel, events.Options{})
				rendered := e.rendered(req, n, fmt.Sprint(n))
				if n%3 == 0 {
					e.derive(rendered, "troupe/health", events.TypeFailed, n, events.Failed{Stage: events.StageHealth, Reason: "crash_loop", Message: "no"})
					continue
				}
				e.goesReady(rendered, n)
			}
			rb, err := events.NewEvent("troupe/cli", events.TypeRollbackRequested, rel, events.RollbackRequested{})
			require.NoError(e.t, err)
			e.publish(rb)
		})
	}
	wg.Wait()
}

// rollbacks counts, on the wire (every publish, whether the stream stores it or drops it as a
// duplicate), the release.rendered history publishes to start a rollback, per release.
func (e *env) rollbacks() func() map[string]int {
	e.t.Helper()
	var mu sync.Mutex
	n := map[string]int{}
	sub, err := e.nc.Subscribe("troupe.release.*.*.rendered", func(m *nats.Msg) {
		ev, err := events.Names{}.Decode(m.Subject, m.Header, m.Data)
		if err == nil && ev.Source() == "troupe/history" {
			mu.Lock()
			n[ev.Subject()]++
			mu.Unlock()
		}
	})
	require.NoError(e.t, err)
	require.NoError(e.t, e.nc.Flush())
	e.t.Cleanup(func() { _ = sub.Unsubscribe() })
	return func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(n)
	}
}

// rolledBack checks that each release's view holds its burst's rollback, to revision 7 (the
// last ready before 8).
func (e *env) rolledBack(rels []events.Release) {
	e.t.Helper()
	for _, rel := range rels {
		// The consumer can look idle a moment before the last view is stored: wait for the
		// rollback's release.rendered (history's own) to be folded, then check the rest.
		var v *historyapi.View
		assert.Eventually(e.t, func() bool {
			got, err := e.svc.View(e.t.Context(), rel)
			if err != nil || len(got.Timeline) == 0 {
				return false
			}
			v = got
			return got.Timeline[len(got.Timeline)-1].Type == events.TypeRendered
		}, 30*time.Second, 50*time.Millisecond, "%s: the rollback's release.rendered folded", rel)
		if v == nil {
			continue
		}
		if assert.NotNil(e.t, v.Rollback, "%s: the rollback in flight", rel) {
			assert.Equal(e.t, historyapi.Rollback{Target: 7, From: 8, Request: v.Rollback.Request}, *v.Rollback, "%s", rel)
		}
		last := v.Timeline[len(v.Timeline)-1]
		assert.Equal(e.t, []any{events.TypeRendered, 7, "troupe/history"}, []any{last.Type, last.Revision, last.Source},
			"%s: the rollback's release.rendered is the last event", rel)
	}
}

// settled waits until history's consumer has handled every event of the stream.
func (e *env) settled() {
	e.t.Helper()
	require.Eventually(e.t, func() bool {
		c, err := e.js.Consumer(e.t.Context(), events.StreamName, history.Name)
		if err != nil {
			return false
		}
		info, err := c.Info(e.t.Context())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	}, 2*time.Minute, 50*time.Millisecond, "history handled every event")
}

// rebuilt is what one history folding the whole stream alone makes of it: the views Rebuild
// stores, which also replace the live ones.
func (e *env) rebuilt() map[string]string {
	e.t.Helper()
	_, err := e.svc.Rebuild(e.t.Context())
	require.NoError(e.t, err)
	return snapshot(e.t, e)
}

// TestReplicasFoldTheSameViews: two history replicas sharing the consumer, each handling one
// event at a time, fold interleaved bursts of events of the same releases into the views one
// history folding the stream alone makes — no update lost, none out of order.
func TestReplicasFoldTheSameViews(t *testing.T) {
	e := newEnv(t)
	second, err := history.New(t.Context(), e.js, history.Options{Subscriber: events.SubscriberConfig{AckWait: 3 * time.Second}})
	require.NoError(t, err)
	natstest.Run(t, second)

	rels := []events.Release{{Namespace: "prod", Name: "a"}, {Namespace: "prod", Name: "b"}, {Namespace: "staging", Name: "a"}}
	const revisions = 8
	rollbacks := e.rollbacks()
	e.burst(rels, revisions)
	e.settled()
	e.rolledBack(rels)
	assert.Equal(t, map[string]int{"prod/a": 1, "prod/b": 1, "staging/a": 1}, rollbacks(), "each rollback started once")

	live := snapshot(t, e)
	require.Len(t, live, len(rels))
	for _, rel := range rels {
		v, err := e.svc.View(t.Context(), rel)
		require.NoError(t, err)
		assert.Len(t, v.Revisions, revisions, "%s: every revision", rel)
		assert.Len(t, v.Timeline, revisions*4-revisions/3+2, "%s: every event (a failed revision has no applied), and the rollback's two", rel)
		for _, r := range v.Revisions {
			want := historyapi.StateReady
			switch {
			case r.Revision%3 == 0:
				want = historyapi.StateFailed
			case r.Revision == 7:
				want = historyapi.StateRendered // sent again: the rollback's
			}
			assert.Equal(t, want, r.State, "%s revision %d", rel, r.Revision)
		}
	}
	sameViews(t, e.rebuilt(), live)
}

// holdBack is a middleware that fails (nak: transient) the event held until the event after has
// been handled, and counts those naks.
type holdBack struct {
	held, after atomic.Pointer[string]
	handled     sync.Map // ids handled without error
	naks        atomic.Int32
}

func (hb *holdBack) middleware(h events.Handler) events.Handler {
	return func(ctx context.Context, ev event.Event) error {
		if id := hb.held.Load(); id != nil && *id == ev.ID() {
			if after := hb.after.Load(); after == nil || !hb.isHandled(*after) {
				hb.naks.Add(1)
				return errors.New("not now") // transient: nak, redelivered after the backoff
			}
		}
		err := h(ctx, ev)
		if err == nil {
			hb.handled.Store(ev.ID(), true)
		}
		return err
	}
}

func (hb *holdBack) isHandled(id string) bool { _, ok := hb.handled.Load(id); return ok }

// hold makes held wait for after.
func (hb *holdBack) hold(held, after event.Event) {
	h, a := held.ID(), after.ID()
	hb.held.Store(&h)
	hb.after.Store(&a)
}

// TestRedeliveryAfterNak: an event whose handling failed (nak) is redelivered after a later
// event of its release was handled: it is in the view anyway, in stream order — and what
// history does about it is done on its redelivery, once.
func TestRedeliveryAfterNak(t *testing.T) {
	rel := events.Release{Namespace: "prod", Name: "web"}
	var hb holdBack
	e := newEnvWith(t, history.Options{Subscriber: events.SubscriberConfig{MaxDeliver: 100,
		Backoff: []time.Duration{50 * time.Millisecond}, Middleware: []events.Middleware{hb.middleware}}})
	rollbacks := e.rollbacks()
	req := e.request(rel, events.Options{})
	rendered := e.rendered(req, 1, "one")
	e.view(rel, func(v *historyapi.View) bool { return v.Get(1) != nil && v.Get(1).State == historyapi.StateRendered })

	// An applied nakked until the ready after it was handled.
	applied, err := events.Derive(rendered, "troupe/applier", events.TypeApplied, events.Applied{
		Bundle:    mustData[events.Rendered](t, rendered).Bundle,
		Inventory: []events.AppliedObject{{ObjectRef: events.ObjectRef{APIVersion: "v1", Kind: "ConfigMap", Namespace: rel.Namespace, Name: "config"}, Action: events.ActionCreated}}})
	require.NoError(t, err)
	events.WithRevision(&applied, 1)
	ready, err := events.Derive(applied, "troupe/health", events.TypeReady, events.Ready{TimeToReady: events.Duration(time.Second), Objects: 1})
	require.NoError(t, err)
	events.WithRevision(&ready, 1)
	hb.hold(applied, ready)
	e.publish(applied)
	// The ready only once the applied was nakked: else a replica may handle the ready before
	// the applied is delivered at all, and nothing is nakked.
	require.Eventually(t, func() bool { return hb.naks.Load() > 0 }, 30*time.Second, 10*time.Millisecond, "the applied was nakked")
	e.publish(ready)
	e.settled()

	v, err := e.svc.View(t.Context(), rel)
	require.NoError(t, err)
	var types []string
	for _, entry := range v.Timeline {
		types = append(types, entry.Type)
	}
	assert.Equal(t, []string{events.TypeRequested, events.TypeRendered, events.TypeApplied, events.TypeReady}, types)
	require.NotNil(t, v.Get(1).Changes, "the applied's changes")
	assert.Equal(t, 1, v.Get(1).Changes.Created)
	assert.Equal(t, historyapi.StateReady, v.Get(1).State)

	// A rollback request nakked until the request after it was handled: the rollback (to
	// revision 1) starts on its redelivery, once.
	e.release(rel, 2, "two", events.Options{})
	e.view(rel, func(v *historyapi.View) bool { return v.Current == 2 })
	rb, err := events.NewEvent("troupe/cli", events.TypeRollbackRequested, rel, events.RollbackRequested{})
	require.NoError(t, err)
	next, err := events.NewEvent("troupe/cli", events.TypeRequested, rel, events.Requested{
		Source: events.Source{Manifests: &events.ManifestsSource{Path: "deploy/"}}})
	require.NoError(t, err)
	naks := hb.naks.Load()
	hb.hold(rb, next)
	e.publish(rb)
	require.Eventually(t, func() bool { return hb.naks.Load() > naks }, 30*time.Second, 10*time.Millisecond, "the rollback request was nakked")
	e.publish(next)
	e.settled()
	v = e.view(rel, func(v *historyapi.View) bool { return v.Get(3) != nil })
	// The subscription sees history's release.rendered a moment after the stream stored it (and
	// the consumer settled): wait for it, then count every copy published by then.
	require.Eventually(t, func() bool { return rollbacks()[rel.String()] > 0 }, 10*time.Second, 10*time.Millisecond, "the rollback's release.rendered")
	assert.Equal(t, map[string]int{rel.String(): 1}, rollbacks(), "one rollback started")
	if assert.NotNil(t, v.Rollback) {
		assert.Equal(t, 1, v.Rollback.Target)
	}
	types = nil
	for _, entry := range v.Timeline[len(v.Timeline)-3:] {
		types = append(types, fmt.Sprintf("%d %s", entry.Revision, entry.Type))
	}
	assert.Equal(t, []string{"1 " + events.TypeRollbackRequested, "3 " + events.TypeRequested, "1 " + events.TypeRendered}, types,
		"in stream order: the rollback's release.rendered was published on the request's redelivery, after revision 3's request")

	live := snapshot(t, e)
	sameViews(t, e.rebuilt(), live)
}

// sameViews checks that got holds the views want holds — the views one history folding the
// stream makes — and names, for a view that differs, the events each folded.
func sameViews(t *testing.T, want, got map[string]string) {
	t.Helper()
	assert.Len(t, got, len(want))
	for rel, w := range want {
		if got[rel] == w {
			continue
		}
		folded := func(s string) (out []string) {
			var v historyapi.View
			_ = json.Unmarshal([]byte(s), &v)
			for _, entry := range v.Timeline {
				out = append(out, fmt.Sprintf("%d:%d %s", entry.Sequence, entry.Revision, entry.Type))
			}
			return out
		}
		t.Errorf("%s differs from the fold of the stream:\nfold: %v\ngot:  %v\n%s", rel, folded(w), folded(got[rel]), diffLines(w, got[rel]))
	}
}

// diffLines names the first line where a and b differ.
func diffLines(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(al), len(bl)) {
		if al[i] != bl[i] {
			return fmt.Sprintf("line %d: fold %q, got %q", i+1, al[i], bl[i])
		}
	}
	return fmt.Sprintf("fold has %d lines, got %d", len(al), len(bl))
}
