package history_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/historyapi"
	"github.com/troupe-dev/troupe/events/natstest"
	"github.com/troupe-dev/troupe/services/history"
)

// env is one test's NATS and history service; the other services' events are published by the
// test, as they would publish them.
type env struct {
	t   *testing.T
	nc  *nats.Conn
	js  jetstream.JetStream
	svc *history.Service
	pub *events.Publisher
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvWith(t, history.Options{})
}

func newEnvWith(t *testing.T, o history.Options) *env {
	t.Helper()
	_, nc, js := natstest.Start(t)
	o.Subscriber.AckWait = 3 * time.Second
	svc, err := history.New(t.Context(), js, o)
	require.NoError(t, err)
	natstest.Run(t, svc)
	require.NoError(t, svc.Serve(t.Context(), nc))
	return &env{t: t, nc: nc, js: js, svc: svc, pub: events.NewPublisher(js, events.Names{})}
}

func (e *env) publish(ev event.Event) event.Event {
	e.t.Helper()
	_, err := e.pub.Publish(e.t.Context(), ev)
	require.NoError(e.t, err)
	return ev
}

func (e *env) request(rel events.Release, opts events.Options) event.Event {
	e.t.Helper()
	ev, err := events.NewEvent("troupe/test", events.TypeRequested, rel, events.Requested{
		Source: events.Source{Manifests: &events.ManifestsSource{Path: "deploy/"}}, Options: opts})
	require.NoError(e.t, err)
	return e.publish(ev)
}

// derive publishes what source would publish of type typ in reaction to cause, for revision.
func (e *env) derive(cause event.Event, source, typ string, revision int, data any) event.Event {
	e.t.Helper()
	ev, err := events.Derive(cause, source, typ, data)
	require.NoError(e.t, err)
	if revision > 0 {
		events.WithRevision(&ev, revision)
	}
	return e.publish(ev)
}

// rendered stores a bundle holding one ConfigMap with data and publishes release.rendered.
func (e *env) rendered(req event.Event, revision int, data string) event.Event {
	e.t.Helper()
	rel, _ := events.ReleaseOf(req)
	cm := map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "config", "namespace": rel.Namespace},
		"data": map[string]any{"value": data}}
	b, err := json.Marshal(events.Bundle{APIVersion: events.BundleAPIVersion, Kind: events.BundleKind, Release: rel.String(), Objects: []map[string]any{cm}})
	require.NoError(e.t, err)
	store, err := events.OpenObjects(e.t.Context(), e.js, events.BucketBundles)
	require.NoError(e.t, err)
	digest, size, err := store.Put(e.t.Context(), bytes.NewReader(b))
	require.NoError(e.t, err)
	return e.derive(req, "troupe/renderer", events.TypeRendered, revision, events.Rendered{Bundle: digest, Size: size,
		Objects: []events.ObjectRef{{APIVersion: "v1", Kind: "ConfigMap", Namespace: rel.Namespace, Name: "config"}}})
}

// goesReady publishes what the applier and health publish for a rendered revision that gets
// ready, and returns the release.ready.
func (e *env) goesReady(rendered event.Event, revision int) event.Event {
	e.t.Helper()
	rel, _ := events.ReleaseOf(rendered)
	applied := e.derive(rendered, "troupe/applier", events.TypeApplied, revision, events.Applied{
		Bundle:    mustData[events.Rendered](e.t, rendered).Bundle,
		Inventory: []events.AppliedObject{{ObjectRef: events.ObjectRef{APIVersion: "v1", Kind: "ConfigMap", Namespace: rel.Namespace, Name: "config"}, Action: events.ActionConfigured}}})
	return e.derive(applied, "troupe/health", events.TypeReady, revision, events.Ready{TimeToReady: events.Duration(time.Second), Objects: 1})
}

// release runs one revision through to ready, with data in its ConfigMap.
func (e *env) release(rel events.Release, revision int, data string, opts events.Options) {
	e.t.Helper()
	req := e.request(rel, opts)
	e.goesReady(e.rendered(req, revision, data), revision)
}

func mustData[T any, P interface {
	*T
	events.Payload
}](t *testing.T, e event.Event) *T {
	t.Helper()
	v, err := events.Data[T, P](e)
	require.NoError(t, err)
	return v
}

// view waits until rel's view satisfies ok, and returns it.
func (e *env) view(rel events.Release, ok func(*historyapi.View) bool) *historyapi.View {
	e.t.Helper()
	var v *historyapi.View
	require.Eventually(e.t, func() bool {
		var err error
		v, err = e.svc.View(e.t.Context(), rel)
		return err == nil && ok(v)
	}, 10*time.Second, 20*time.Millisecond, "view of %s", rel)
	return v
}

// from collects what history publishes about rel, from now on.
func (e *env) from(rel events.Release) func(n int, wait time.Duration) []event.Event {
	f, err := events.Names{}.ReleaseFilter(rel)
	require.NoError(e.t, err)
	c, err := e.js.OrderedConsumer(e.t.Context(), events.StreamName, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{f}, DeliverPolicy: jetstream.DeliverNewPolicy})
	require.NoError(e.t, err)
	msgs, err := c.Messages()
	require.NoError(e.t, err)
	e.t.Cleanup(msgs.Stop)
	var mu sync.Mutex
	var got []event.Event
	go func() {
		for {
			m, err := msgs.Next()
			if err != nil {
				return
			}
			ev, err := events.Names{}.Decode(m.Subject(), m.Headers(), m.Data())
			if err == nil && ev.Source() == "troupe/history" {
				mu.Lock()
				got = append(got, ev)
				mu.Unlock()
			}
		}
	}()
	return func(n int, wait time.Duration) []event.Event {
		deadline := time.Now().Add(wait)
		for {
			mu.Lock()
			out := slices.Clone(got)
			mu.Unlock()
			if (n > 0 && len(out) >= n) || time.Now().After(deadline) {
				return out
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// TestRevisionsFollowTheStream: concurrent requests for two releases are numbered per release,
// from 1, in the stream's order — the numbers every other service computes.
func TestRevisionsFollowTheStream(t *testing.T) {
	e := newEnv(t)
	a, b := events.Release{Namespace: "prod", Name: "a"}, events.Release{Namespace: "prod", Name: "b"}
	var wg sync.WaitGroup
	for _, rel := range []events.Release{a, b} {
		wg.Go(func() {
			for range 10 {
				e.request(rel, events.Options{})
			}
		})
	}
	wg.Wait()
	revisions, err := events.NewRevisions(t.Context(), e.js, events.Names{})
	require.NoError(t, err)
	for _, rel := range []events.Release{a, b} {
		v := e.view(rel, func(v *historyapi.View) bool { return len(v.Revisions) == 10 })
		var last uint64
		for i, r := range v.Revisions {
			assert.Equal(t, i+1, r.Revision)
			assert.Equal(t, historyapi.StateRequested, r.State)
		}
		for _, entry := range v.Timeline {
			assert.Greater(t, entry.Sequence, last, "the timeline is in stream order")
			last = entry.Sequence
			n, err := revisions.Of(t.Context(), rel, entry.Sequence)
			require.NoError(t, err)
			assert.Equal(t, n, entry.Revision, "the renderer's number")
		}
	}
}

// TestRollbackResendsTheRecordedBundle: v1 ready, v2 ready, a rollback (to the previous ready
// revision) re-publishes v1's bundle as v1's release.rendered — no new number; once v1 is ready
// again it is current, v2 is rolled back, and the next request is revision 3.
func TestRollbackResendsTheRecordedBundle(t *testing.T) {
	e := newEnv(t)
	rel := events.Release{Namespace: "prod", Name: "web"}
	e.release(rel, 1, "one", events.Options{})
	e.release(rel, 2, "two", events.Options{})
	v := e.view(rel, func(v *historyapi.View) bool { return v.Current == 2 })
	v1 := v.Get(1)

	got := e.from(rel)
	rb, err := events.NewEvent("troupe/cli", events.TypeRollbackRequested, rel, events.RollbackRequested{})
	require.NoError(t, err)
	e.publish(rb)
	out := got(1, 10*time.Second)
	require.Len(t, out, 1)
	require.Equal(t, events.TypeRendered, out[0].Type())
	assert.Equal(t, 1, events.Revision(out[0]))
	rendered := mustData[events.Rendered](t, out[0])
	assert.True(t, rendered.Rollback)
	assert.Equal(t, v1.Bundle, rendered.Bundle)
	assert.Equal(t, v1.Objects, rendered.Objects)

	e.goesReady(out[0], 1)
	v = e.view(rel, func(v *historyapi.View) bool { return v.Current == 1 })
	assert.Equal(t, historyapi.StateRolledBack, v.Get(2).State)
	assert.Equal(t, 1, v.Get(2).RolledBackTo)
	assert.Nil(t, v.Rollback)
	var actions []string
	for _, entry := range v.Timeline {
		if entry.Action != "" {
			actions = append(actions, entry.Action)
		}
	}
	assert.Equal(t, []string{historyapi.ActionRollback, historyapi.ActionRolledBack}, actions)

	e.request(rel, events.Options{})
	v = e.view(rel, func(v *historyapi.View) bool { return len(v.Revisions) == 3 })
	assert.Equal(t, 3, v.Revisions[2].Revision, "a rollback mints no number")
}

// TestAutomaticRollbackOnce: v2 asks rollbackOnFailure and fails at health: history asks for a
// rollback to v1; that rollback fails too: v2 is failed with both reasons, and nothing rolls
// back again.
func TestAutomaticRollbackOnce(t *testing.T) {
	e := newEnv(t)
	rel := events.Release{Namespace: "prod", Name: "web"}
	e.release(rel, 1, "one", events.Options{})
	e.view(rel, func(v *historyapi.View) bool { return v.Current == 1 })

	got := e.from(rel)
	req := e.request(rel, events.Options{RollbackOnFailure: true})
	r2 := e.rendered(req, 2, "two")
	e.derive(r2, "troupe/health", events.TypeFailed, 2, events.Failed{Stage: events.StageHealth, Reason: "crash_loop", Message: "pod web-1 crash-loops"})
	out := got(1, 10*time.Second)
	require.NotEmpty(t, out)
	require.Equal(t, events.TypeRollbackRequested, out[0].Type())
	rb := mustData[events.RollbackRequested](t, out[0])
	assert.True(t, rb.Automatic)
	assert.Equal(t, 1, rb.TargetRevision)
	assert.Contains(t, rb.Reason, "crash_loop")

	out = got(2, 10*time.Second)
	require.GreaterOrEqual(t, len(out), 2)
	require.Equal(t, events.TypeRendered, out[1].Type(), "the rollback starts")
	e.derive(out[1], "troupe/applier", events.TypeFailed, 1, events.Failed{Stage: events.StageApply, Reason: "cluster_unreachable", Message: "no answer"})

	v := e.view(rel, func(v *historyapi.View) bool {
		return v.Rollback == nil && v.Get(2).State == historyapi.StateFailed && len(v.Get(2).Message) > 30
	})
	assert.Contains(t, v.Get(2).Message, "pod web-1 crash-loops")
	assert.Contains(t, v.Get(2).Message, "rollback to revision 1 failed")
	assert.Contains(t, v.Get(2).Message, "cluster_unreachable")
	time.Sleep(time.Second)
	out = got(0, 0)
	assert.Len(t, out, 2, "no second rollback: %v", out)

	// Nothing is current now, but revision 1 was ready: a failing upgrade is not a first
	// install, and its objects are not uninstalled.
	req = e.request(rel, events.Options{RollbackOnFailure: true})
	e.derive(e.rendered(req, 3, "three"), "troupe/health", events.TypeFailed, 3, events.Failed{Stage: events.StageHealth, Reason: "crash_loop", Message: "again"})
	time.Sleep(time.Second)
	for _, ev := range got(0, 0) {
		assert.NotEqual(t, events.TypeUninstallRequested, ev.Type(), "an upgrade is never uninstalled")
	}
}

// TestFailedFirstInstallIsUninstalled: a first install that asked rollbackOnFailure and failed
// in the cluster is uninstalled, as helm install --atomic does (there is nothing to roll back
// to); one that failed to render changed nothing and is left alone; and an uninstalled release
// installed again counts as a first install.
func TestFailedFirstInstallIsUninstalled(t *testing.T) {
	e := newEnv(t)
	rel := events.Release{Namespace: "prod", Name: "fresh"}
	got := e.from(rel)

	bad := e.request(rel, events.Options{RollbackOnFailure: true})
	e.derive(bad, "troupe/renderer", events.TypeFailed, 1, events.Failed{Stage: events.StageRender, Reason: "template_error", Message: "bad"})
	time.Sleep(time.Second)
	out := got(0, 0)
	require.Empty(t, out, "a render failure changed nothing: nothing to undo")

	req := e.request(rel, events.Options{RollbackOnFailure: true, Timeout: events.Duration(time.Minute)})
	r2 := e.rendered(req, 2, "two")
	failed := e.derive(r2, "troupe/health", events.TypeFailed, 2, events.Failed{Stage: events.StageHealth, Reason: "crash_loop", Message: "pod fresh-1 crash-loops"})
	out = got(1, 10*time.Second)
	require.Len(t, out, 1)
	un := out[0]
	require.Equal(t, events.TypeUninstallRequested, un.Type())
	assert.Equal(t, failed.ID(), events.CausationID(un), "caused by the failure: a follower of the request finds it")
	assert.NotEqual(t, events.CorrelationID(failed), events.CorrelationID(un), "a flow of its own")
	d := mustData[events.UninstallRequested](t, un)
	assert.True(t, d.Automatic)
	assert.Equal(t, events.Duration(time.Minute), d.Timeout, "the request's timeout")
	assert.Contains(t, d.Reason, "revision 2 failed at health (crash_loop): pod fresh-1 crash-loops; nothing was ready before")
	v := e.view(rel, func(v *historyapi.View) bool {
		return slices.ContainsFunc(v.Timeline, func(x historyapi.Entry) bool { return x.Type == events.TypeUninstallRequested })
	})
	i := slices.IndexFunc(v.Timeline, func(x historyapi.Entry) bool { return x.Type == events.TypeUninstallRequested })
	assert.Contains(t, v.Timeline[i].Note, "automatic uninstall: revision 2 failed")

	e.derive(un, "troupe/applier", events.TypeUninstalled, 0, events.Uninstalled{})
	e.view(rel, func(v *historyapi.View) bool { return v.Uninstalled })
	time.Sleep(time.Second)
	require.Len(t, got(0, 0), 1, "uninstalled once")

	// Ready, then uninstalled: a failed install after that is a first install again.
	e.release(rel, 3, "three", events.Options{})
	e.view(rel, func(v *historyapi.View) bool { return v.Current == 3 })
	req = e.request(rel, events.Options{RollbackOnFailure: true})
	failed = e.derive(e.rendered(req, 4, "four"), "troupe/applier", events.TypeFailed, 4, events.Failed{Stage: events.StageApply, Reason: "invalid_object", Message: "no"})
	time.Sleep(time.Second)
	out = got(2, 10*time.Second)
	require.GreaterOrEqual(t, len(out), 2)
	assert.Equal(t, events.TypeRollbackRequested, out[1].Type(), "revision 3 is ready: it is rolled back to, not uninstalled")
	assert.Equal(t, failed.ID(), events.CausationID(out[1]))
}

// TestRollbackRefusals: a rollback to a revision that does not exist, or whose bundle is gone
// from the object store, is a release.failed (stage rollback) that says so.
func TestRollbackRefusals(t *testing.T) {
	e := newEnv(t)
	rel := events.Release{Namespace: "prod", Name: "web"}
	e.release(rel, 1, "one", events.Options{})
	v := e.view(rel, func(v *historyapi.View) bool { return v.Current == 1 })

	got := e.from(rel)
	rb, err := events.NewEvent("troupe/cli", events.TypeRollbackRequested, rel, events.RollbackRequested{TargetRevision: 9})
	require.NoError(t, err)
	e.publish(rb)
	out := got(1, 10*time.Second)
	require.Len(t, out, 1)
	f := mustData[events.Failed](t, out[0])
	assert.Equal(t, events.StageRollback, f.Stage)
	assert.Equal(t, history.ReasonNoRollbackTarget, f.Reason)
	assert.Contains(t, f.Message, "prod/web has no revision 9")

	store, err := events.OpenObjects(t.Context(), e.js, events.BucketBundles)
	require.NoError(t, err)
	require.NoError(t, store.Delete(t.Context(), v.Get(1).Bundle))
	rb, err = events.NewEvent("troupe/cli", events.TypeRollbackRequested, rel, events.RollbackRequested{TargetRevision: 1})
	require.NoError(t, err)
	e.publish(rb)
	out = got(2, 10*time.Second)
	require.GreaterOrEqual(t, len(out), 2)
	f = mustData[events.Failed](t, out[1])
	assert.Equal(t, history.ReasonBundleExpired, f.Reason)
	assert.Contains(t, f.Message, "no longer in the bundles object store")
	v = e.view(rel, func(v *historyapi.View) bool { return v.Rollback == nil })
	assert.Equal(t, 1, v.Current)
}

// TestRebuildEqualsLive: views rebuilt from the stream from scratch equal the live ones.
func TestRebuildEqualsLive(t *testing.T) {
	e := newEnv(t)
	web, api := events.Release{Namespace: "prod", Name: "web"}, events.Release{Namespace: "staging", Name: "api"}
	e.release(web, 1, "one", events.Options{})
	e.release(api, 1, "one", events.Options{})
	e.release(web, 2, "two", events.Options{})
	rb, err := events.NewEvent("troupe/cli", events.TypeRollbackRequested, web, events.RollbackRequested{})
	require.NoError(t, err)
	e.publish(rb)
	req := e.request(api, events.Options{})
	e.derive(e.rendered(req, 2, "bad"), "troupe/applier", events.TypeFailed, 2, events.Failed{Stage: events.StageApply, Reason: "invalid_object", Message: "no"})
	e.view(api, func(v *historyapi.View) bool { return v.Get(2) != nil && v.Get(2).State == historyapi.StateFailed })
	e.view(web, func(v *historyapi.View) bool { return v.Rollback != nil })

	live := snapshot(t, e)
	kv, err := e.js.KeyValue(t.Context(), events.KVHistory)
	require.NoError(t, err)
	for _, k := range []string{"prod.web", "staging.api"} {
		require.NoError(t, kv.Purge(t.Context(), k))
	}
	require.Empty(t, snapshot(t, e), "from scratch")
	n, err := e.svc.Rebuild(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	assert.Equal(t, live, snapshot(t, e))
}

func snapshot(t *testing.T, e *env) map[string]string {
	t.Helper()
	views, err := e.svc.Views(t.Context())
	require.NoError(t, err)
	out := map[string]string{}
	for _, v := range views {
		b, err := json.MarshalIndent(v, "", " ")
		require.NoError(t, err)
		out[v.Release] = string(b)
	}
	return out
}

// TestQueries: the micro endpoints answer what the views hold — and clear errors for what they
// do not.
func TestQueries(t *testing.T) {
	e := newEnv(t)
	rel := events.Release{Namespace: "prod", Name: "web"}
	e.release(rel, 1, "one", events.Options{})
	e.release(rel, 2, "two", events.Options{})
	e.view(rel, func(v *historyapi.View) bool { return v.Current == 2 })

	ask := func(endpoint string, q historyapi.Query, into any) micro.Headers {
		t.Helper()
		b, err := json.Marshal(q)
		require.NoError(t, err)
		msg, err := e.nc.Request(historyapi.QuerySubject(events.Names{})+"."+endpoint, b, 5*time.Second)
		require.NoError(t, err)
		if msg.Header.Get(micro.ErrorHeader) == "" && into != nil {
			require.NoError(t, json.Unmarshal(msg.Data, into), string(msg.Data))
		}
		return micro.Headers(msg.Header)
	}
	var list []historyapi.Summary
	ask("list", historyapi.Query{}, &list)
	require.Len(t, list, 1)
	assert.Equal(t, historyapi.Summary{Release: "prod/web", Current: 2, Latest: 2, State: historyapi.StateReady, Updated: list[0].Updated,
		Requested: list[0].Requested, Timeout: list[0].Timeout}, list[0])
	assert.False(t, list[0].Requested.IsZero(), "when the latest revision was requested")

	// Narrowed to a namespace and paged, in NS/NAME order.
	for _, r := range []events.Release{{Namespace: "prod", Name: "api"}, {Namespace: "staging", Name: "web"}, {Namespace: "production", Name: "db"}} {
		e.release(r, 1, "one", events.Options{})
		e.view(r, func(v *historyapi.View) bool { return v.Current == 1 })
	}
	names := func(l []historyapi.Summary) (out []string) {
		for _, s := range l {
			out = append(out, s.Release)
		}
		return out
	}
	ask("list", historyapi.Query{}, &list)
	assert.Equal(t, []string{"prod/api", "prod/web", "production/db", "staging/web"}, names(list))
	ask("list", historyapi.Query{Namespace: "prod"}, &list)
	assert.Equal(t, []string{"prod/api", "prod/web"}, names(list), "not production's")
	ask("list", historyapi.Query{Limit: 3}, &list)
	assert.Equal(t, []string{"prod/api", "prod/web", "production/db"}, names(list))
	ask("list", historyapi.Query{Limit: 3, After: "production/db"}, &list)
	assert.Equal(t, []string{"staging/web"}, names(list))
	h := ask("list", historyapi.Query{Namespace: "Bad_NS"}, nil)
	assert.Equal(t, "400", h.Get(micro.ErrorCodeHeader))

	var v historyapi.View
	ask("get", historyapi.Query{Release: "prod/web"}, &v)
	assert.Len(t, v.Revisions, 2)

	var rev historyapi.RevisionDetail
	ask("revision", historyapi.Query{Release: "prod/web", Revision: 1}, &rev)
	assert.Equal(t, 1, rev.Revision.Revision)
	assert.False(t, rev.Current)
	require.Len(t, rev.Manifests, 1)
	assert.Equal(t, map[string]any{"value": "one"}, rev.Manifests[0]["data"])

	var d historyapi.Diff
	ask("diff", historyapi.Query{Release: "prod/web", From: 1, To: 2}, &d)
	require.Len(t, d.Objects, 1)
	assert.Equal(t, "changed", d.Objects[0].Change)
	assert.Equal(t, []historyapi.FieldChange{{Path: "data.value", From: "one", To: "two"}}, d.Objects[0].Fields)

	var timeline []historyapi.Entry
	ask("timeline", historyapi.Query{Release: "prod/web"}, &timeline)
	var types []string
	for _, entry := range timeline {
		types = append(types, fmt.Sprintf("%d %s", entry.Revision, entry.Type))
	}
	assert.Equal(t, []string{"1 release.requested", "1 release.rendered", "1 release.applied", "1 release.ready",
		"2 release.requested", "2 release.rendered", "2 release.applied", "2 release.ready"}, types)

	h = ask("get", historyapi.Query{Release: "prod/nope"}, nil)
	assert.Equal(t, "404", h.Get(micro.ErrorCodeHeader))
	assert.Contains(t, h.Get(micro.ErrorHeader), "unknown release prod/nope")
	h = ask("revision", historyapi.Query{Release: "prod/web", Revision: 7}, nil)
	assert.Equal(t, "404", h.Get(micro.ErrorCodeHeader))
	assert.Contains(t, h.Get(micro.ErrorHeader), "prod/web has no revision 7 (it has 1 to 2)")
	h = ask("get", historyapi.Query{Release: "Not A Release"}, nil)
	assert.Equal(t, "400", h.Get(micro.ErrorCodeHeader))

	// The same over HTTP.
	srv := httptest.NewServer(e.svc.HTTPHandler())
	defer srv.Close()
	get := func(path string, into any) int {
		t.Helper()
		res, err := http.Get(srv.URL + path)
		require.NoError(t, err)
		defer res.Body.Close()
		require.NoError(t, json.NewDecoder(res.Body).Decode(into))
		return res.StatusCode
	}
	var hd historyapi.Diff
	assert.Equal(t, http.StatusOK, get("/releases/prod/web/diff?from=1&to=2", &hd))
	assert.Equal(t, d, hd)
	var problem map[string]string
	assert.Equal(t, http.StatusNotFound, get("/releases/prod/web/revisions/7", &problem))
	assert.Contains(t, problem["error"], "no revision 7")
}

// TestRetention: the last Keep revisions (and the current one) are kept; the bundles of older
// ones are deleted from the object store.
func TestRetention(t *testing.T) {
	e := newEnvWith(t, history.Options{Keep: 2})
	rel := events.Release{Namespace: "prod", Name: "web"}
	e.release(rel, 1, "one", events.Options{})
	first := e.view(rel, func(v *historyapi.View) bool { return v.Current == 1 }).Get(1).Bundle
	for n := 2; n <= 4; n++ {
		e.release(rel, n, fmt.Sprint(n), events.Options{})
	}
	v := e.view(rel, func(v *historyapi.View) bool { return v.Current == 4 })
	var kept []int
	for _, r := range v.Revisions {
		kept = append(kept, r.Revision)
	}
	assert.Equal(t, []int{3, 4}, kept)
	for _, entry := range v.Timeline {
		assert.GreaterOrEqual(t, entry.Revision, 3, "the timeline of dropped revisions goes with them")
	}
	store, err := events.OpenObjects(t.Context(), e.js, events.BucketBundles)
	require.NoError(t, err)
	has, err := store.Has(t.Context(), first)
	require.NoError(t, err)
	assert.False(t, has, "revision 1's bundle deleted")
	has, err = store.Has(t.Context(), v.Get(3).Bundle)
	require.NoError(t, err)
	assert.True(t, has)
}

// TestAnswersLargerThanAMessage: a revision whose manifests are larger than a NATS message (a
// 9 MB bundle: kube-prometheus-stack's CRDs alone are ~5 MB) is answered whole, in chunks that
// historyapi.Ask puts back together — not left unanswered until the asker's timeout.
func TestAnswersLargerThanAMessage(t *testing.T) {
	e := newEnv(t)
	rel := events.Release{Namespace: "prod", Name: "big"}
	big := strings.Repeat("0123456789abcdef", 9<<20/16)
	e.release(rel, 1, big, events.Options{})
	e.view(rel, func(v *historyapi.View) bool { return v.Current == 1 })
	require.Less(t, e.nc.MaxPayload(), int64(len(big)), "the answer does not fit one message")

	q, err := json.Marshal(historyapi.Query{Release: "prod/big", Revision: 1})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	data, header, err := historyapi.Ask(ctx, e.nc, historyapi.QuerySubject(events.Names{})+"."+historyapi.EndpointRevision, q)
	require.NoError(t, err)
	assert.Empty(t, header.Get(micro.ErrorHeader))
	var rev historyapi.RevisionDetail
	require.NoError(t, json.Unmarshal(data, &rev))
	require.Len(t, rev.Manifests, 1)
	assert.Equal(t, big, rev.Manifests[0]["data"].(map[string]any)["value"], "every byte, in order")

	// A small answer is one message, read the same way.
	data, _, err = historyapi.Ask(ctx, e.nc, historyapi.QuerySubject(events.Names{})+"."+historyapi.EndpointList, []byte(`{}`))
	require.NoError(t, err)
	assert.Contains(t, string(data), `"prod/big"`)
}

// TestGateFailureIsNotUndone: a revision its gates held back (rejected, or silent past its
// deadline) changed nothing: though it asked rollbackOnFailure, nothing is rolled back to — the
// revision before is still live — and a first install is not uninstalled.
func TestGateFailureIsNotUndone(t *testing.T) {
	e := newEnv(t)
	first := events.Release{Namespace: "prod", Name: "fresh"}
	got := e.from(first)
	req := e.request(first, events.Options{RollbackOnFailure: true})
	e.derive(e.rendered(req, 1, "one"), "troupe/applier", events.TypeFailed, 1,
		events.Failed{Stage: events.StageGate, Reason: events.ReasonGateRejected, Message: "gate policy rejected revision 1"})
	e.view(first, func(v *historyapi.View) bool { return v.Get(1) != nil && v.Get(1).State == historyapi.StateFailed })
	time.Sleep(time.Second)
	assert.Empty(t, got(0, 0), "a first install its gates held back is not uninstalled")

	upgraded := events.Release{Namespace: "prod", Name: "web"}
	e.release(upgraded, 1, "one", events.Options{})
	e.view(upgraded, func(v *historyapi.View) bool { return v.Current == 1 })
	got = e.from(upgraded)
	req = e.request(upgraded, events.Options{RollbackOnFailure: true})
	e.derive(e.rendered(req, 2, "two"), "troupe/deadlines", events.TypeFailed, 2,
		events.Failed{Stage: events.StageGate, Reason: "deadline_exceeded", Message: "waiting for gate approval"})
	e.view(upgraded, func(v *historyapi.View) bool { return v.Get(2) != nil && v.Get(2).State == historyapi.StateFailed })
	time.Sleep(time.Second)
	assert.Empty(t, got(0, 0), "no rollback to the revision still live")
}
