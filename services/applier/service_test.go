package applier_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/natstest"
	"github.com/troupe-dev/troupe/services/applier"
	"github.com/troupe-dev/troupe/services/renderer/render"
	"github.com/troupe-dev/troupe/test/cluster"
)

var kube *cluster.Cluster

func TestMain(m *testing.M) { os.Exit(cluster.Main(m, &kube)) }

// env is one test's NATS, with the applier's shared state in it.
type env struct {
	t  *testing.T
	js jetstream.JetStream
}

func newEnv(t *testing.T) *env {
	t.Helper()
	_, _, js := natstest.Start(t)
	return &env{t: t, js: js}
}

// start runs an applier until the test ends, or until the returned cancel.
func (e *env) start(o applier.Options) (cancel func()) {
	e.t.Helper()
	if o.LeaseTTL == 0 {
		o.LeaseTTL = 2 * time.Second
	}
	o.Subscriber.AckWait = 3 * time.Second
	o.Subscriber.Backoff = []time.Duration{200 * time.Millisecond}
	o.Subscriber.DeliverAll = true
	svc, err := applier.New(e.t.Context(), e.js, kube.Config, o)
	require.NoError(e.t, err)
	return natstest.Run(e.t, svc)
}

// countPublished counts every publish of typ for rel on the wire, from now on: the stream's
// duplicate window would hide a second one.
func (e *env) countPublished(rel events.Release, typ string) *atomic.Int32 {
	e.t.Helper()
	subject, err := events.Names{}.Subject(rel, typ)
	require.NoError(e.t, err)
	var n atomic.Int32
	sub, err := e.js.Conn().Subscribe(subject, func(*nats.Msg) { n.Add(1) })
	require.NoError(e.t, err)
	require.NoError(e.t, e.js.Conn().Flush())
	e.t.Cleanup(func() { _ = sub.Unsubscribe() })
	return &n
}

// request publishes a release.requested (what numbers revisions) and returns it.
func (e *env) request(rel events.Release, opts events.Options) event.Event {
	e.t.Helper()
	ev, err := events.NewEvent("troupe/test", events.TypeRequested, rel, events.Requested{
		Source: events.Source{Manifests: &events.ManifestsSource{YAML: "{}"}}, Options: opts})
	require.NoError(e.t, err)
	_, err = events.NewPublisher(e.js, events.Names{}).Publish(e.t.Context(), ev)
	require.NoError(e.t, err)
	return ev
}

// rendered stores a bundle of objs and publishes the release.rendered of revision for request:
// the renderer's, or, for a release.rollback.requested, history's (Rollback set).
func (e *env) rendered(request event.Event, revision int, objs []map[string]any, opts events.Options) event.Event {
	e.t.Helper()
	return e.renderedWithHooks(request, revision, objs, nil, opts)
}

// renderedWithHooks is rendered, with a chart's hooks in the bundle.
func (e *env) renderedWithHooks(request event.Event, revision int, objs []map[string]any, hooks []events.BundleHook, opts events.Options) event.Event {
	e.t.Helper()
	return e.renderedBundle(request, revision, objs, hooks, nil, opts)
}

// renderedBundle is renderedWithHooks naming gates, as the renderer does.
func (e *env) renderedBundle(request event.Event, revision int, objs []map[string]any, hooks []events.BundleHook, gates []string, opts events.Options) event.Event {
	e.t.Helper()
	rel, err := events.ReleaseOf(request)
	require.NoError(e.t, err)
	data, err := json.Marshal(events.Bundle{APIVersion: events.BundleAPIVersion, Kind: events.BundleKind, Release: rel.String(), Objects: objs, Hooks: hooks})
	require.NoError(e.t, err)
	store, err := events.OpenObjects(e.t.Context(), e.js, events.BucketBundles)
	require.NoError(e.t, err)
	digest, size, err := store.Put(e.t.Context(), bytes.NewReader(data))
	require.NoError(e.t, err)
	source, rollback := "troupe/renderer", request.Type() == events.TypeRollbackRequested
	if rollback {
		source = "troupe/history"
	}
	ev, err := events.Derive(request, source, events.TypeRendered, events.Rendered{Bundle: digest, Size: size, Options: opts, Rollback: rollback, Gates: gates})
	require.NoError(e.t, err)
	events.WithRevision(&ev, revision)
	_, err = events.NewPublisher(e.js, events.Names{}).Publish(e.t.Context(), ev)
	require.NoError(e.t, err)
	return ev
}

// answer waits for the applier's event for the request with correlation id corr.
func (e *env) answer(rel events.Release, corr string) event.Event {
	e.t.Helper()
	got := e.answers(rel, corr, 1, 60*time.Second)
	return got[0]
}

// answers collects the applier's events for corr: n of them, or (n = 0) all that come in wait.
func (e *env) answers(rel events.Release, corr string, n int, wait time.Duration) []event.Event {
	e.t.Helper()
	f, err := events.Names{}.ReleaseFilter(rel)
	require.NoError(e.t, err)
	c, err := e.js.OrderedConsumer(e.t.Context(), events.StreamName, jetstream.OrderedConsumerConfig{FilterSubjects: []string{f}})
	require.NoError(e.t, err)
	var out []event.Event
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) && (n == 0 || len(out) < n) {
		msg, err := c.Next(jetstream.FetchMaxWait(500 * time.Millisecond))
		if err != nil {
			continue
		}
		ev, err := events.Names{}.Decode(msg.Subject(), msg.Headers(), msg.Data())
		require.NoError(e.t, err)
		if ev.Source() == "troupe/applier" && events.CorrelationID(ev) == corr {
			out = append(out, ev)
		}
	}
	if n > 0 && len(out) < n {
		e.t.Fatalf("%d answers from the applier to %s, want %d", len(out), corr, n)
	}
	return out
}

func configMap(ns, name string, data map[string]any) map[string]any {
	return map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": name, "namespace": ns}, "data": data}
}

func fixtures(t *testing.T) string {
	wd, err := os.Getwd()
	require.NoError(t, err)
	return filepath.Join(wd, "..", "..", "..", "shared", "fixtures")
}

func TestAppliesPodinfoAndRecordsTheInventory(t *testing.T) {
	e := newEnv(t)
	e.start(applier.Options{})
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "podinfo"}
	r, err := render.New(render.Options{SourceRoots: []string{fixtures(t)}})
	require.NoError(t, err)
	out, err := r.Render(t.Context(), render.Input{Release: rel, Revision: 1, Request: events.Requested{
		Source: events.Source{Helm: &events.HelmSource{Path: filepath.Join(fixtures(t), "podinfo/charts/podinfo")}}}})
	require.NoError(t, err)
	b, err := events.ReadBundle(out.Bundle)
	require.NoError(t, err)

	req := e.request(rel, events.Options{})
	e.rendered(req, 1, b.Objects, events.Options{})
	got := e.answer(rel, req.ID())
	require.Equal(t, events.TypeApplied, got.Type(), string(got.Data()))
	assert.Equal(t, 1, events.Revision(got))
	applied, err := events.Data[events.Applied](got)
	require.NoError(t, err)
	assert.Len(t, applied.Inventory, len(b.Objects))
	_, err = kube.Client.AppsV1().Deployments(ns).Get(t.Context(), "podinfo", metav1.GetOptions{})
	require.NoError(t, err)

	kv, err := e.js.KeyValue(t.Context(), events.KVInventory)
	require.NoError(t, err)
	for _, k := range []string{ns + ".podinfo", ns + ".podinfo.1"} {
		entry, err := kv.Get(t.Context(), k)
		require.NoError(t, err, k)
		var rec applier.Record
		require.NoError(t, json.Unmarshal(entry.Value(), &rec))
		assert.Equal(t, 1, rec.Revision)
		assert.Len(t, rec.Objects, len(b.Objects))
	}
}

// TestRedeliveryRepublishesTheSameApplied: a release.rendered delivered again after it was
// applied (here: the applier's consumer made anew, reading the stream from the start) finds its
// release.applied in the stream and publishes nothing — however long after (the stream's
// duplicate window is not what keeps one) — and the cluster is not touched.
func TestRedeliveryRepublishesTheSameApplied(t *testing.T) {
	e := newEnv(t)
	stop := e.start(applier.Options{})
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}
	req := e.request(rel, events.Options{})
	e.rendered(req, 1, []map[string]any{configMap(ns, "a", map[string]any{"k": "v"})}, events.Options{})
	first := e.answer(rel, req.ID())
	require.Equal(t, events.TypeApplied, first.Type(), string(first.Data()))
	cm, err := kube.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), "a", metav1.GetOptions{})
	require.NoError(t, err)

	stop()
	require.NoError(t, e.js.DeleteConsumer(t.Context(), events.StreamName, applier.Name))
	published := e.countPublished(rel, events.TypeApplied)
	e.start(applier.Options{})
	require.Eventually(t, func() bool {
		c, err := e.js.Consumer(t.Context(), events.StreamName, applier.Name)
		if err != nil {
			return false
		}
		info, err := c.Info(t.Context())
		return err == nil && info.Delivered.Consumer > 0 && info.NumAckPending == 0 && info.NumPending == 0
	}, 30*time.Second, 100*time.Millisecond, "the redelivered event is handled and acked")
	all := e.answers(rel, req.ID(), 0, 2*time.Second)
	require.Len(t, all, 1)
	assert.Equal(t, first.ID(), all[0].ID())
	assert.EqualValues(t, 0, published.Load(),
		"the stream holds the revision's release.applied already: not published again (counted on the wire, not after the stream's dedupe)")
	after, err := kube.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), "a", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, cm.ResourceVersion, after.ResourceVersion, "nothing changed in the cluster")
}

// TestInvalidRevisionFailsAndKeepsThePrevious: a revision with an object the API server rejects
// ends in release.failed (stage apply, the object and the server's message) and the previous
// revision's objects stay exactly as they were.
func TestInvalidRevisionFailsAndKeepsThePrevious(t *testing.T) {
	e := newEnv(t)
	e.start(applier.Options{})
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}
	req1 := e.request(rel, events.Options{})
	e.rendered(req1, 1, []map[string]any{configMap(ns, "a", map[string]any{"v": "1"}), configMap(ns, "b", nil)}, events.Options{})
	require.Equal(t, events.TypeApplied, e.answer(rel, req1.ID()).Type())
	a1, err := kube.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), "a", metav1.GetOptions{})
	require.NoError(t, err)

	bad := map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": map[string]any{"name": "Bad_Name", "namespace": ns},
		"spec": map[string]any{"selector": map[string]any{"matchLabels": map[string]any{"a": "b"}},
			"template": map[string]any{"metadata": map[string]any{"labels": map[string]any{"a": "b"}}, "spec": map[string]any{"containers": []any{map[string]any{"name": "c", "image": "x"}}}}}}
	published := e.countPublished(rel, events.TypeFailed)
	req2 := e.request(rel, events.Options{})
	e.rendered(req2, 2, []map[string]any{configMap(ns, "a", map[string]any{"v": "2"}), bad}, events.Options{})
	got := e.answer(rel, req2.ID())
	require.Equal(t, events.TypeFailed, got.Type(), string(got.Data()))
	assert.Equal(t, 2, events.Revision(got))
	time.Sleep(300 * time.Millisecond) // a second publish, if there were one, would have come by now
	assert.EqualValues(t, 1, published.Load(), "release.failed published once (counted on the wire, not after the stream's dedupe)")
	f, err := events.Data[events.Failed](got)
	require.NoError(t, err)
	assert.Equal(t, events.StageApply, f.Stage)
	assert.Equal(t, "invalid_object", f.Reason)
	require.Len(t, f.Objects, 1)
	assert.Equal(t, "Bad_Name", f.Objects[0].Name)
	assert.Contains(t, f.Objects[0].Message, "metadata.name")
	assert.True(t, strings.HasPrefix(f.Message, "Deployment "+ns+"/Bad_Name: "), "the message says what, the reason is beside it: %s", f.Message)
	a2, err := kube.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), "a", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, a1.ResourceVersion, a2.ResourceVersion)
	_, err = kube.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), "b", metav1.GetOptions{})
	assert.NoError(t, err, "not pruned")
}

// hookJob is a Job hook of phases; fail makes its pod fail.
func hookJob(name string, fail bool, phases ...string) events.BundleHook {
	annotations := map[string]any{}
	if fail {
		annotations[cluster.FaultAnnotation] = cluster.FaultFail
	}
	return events.BundleHook{Events: phases, Object: map[string]any{"apiVersion": "batch/v1", "kind": "Job", "metadata": map[string]any{"name": name},
		"spec": map[string]any{"backoffLimit": int64(0), "template": map[string]any{"metadata": map[string]any{"annotations": annotations},
			"spec": map[string]any{"restartPolicy": "Never", "containers": []any{map[string]any{"name": "run", "image": "busybox:1.36"}}}}}}}
}

// TestHooksAreEvents: the applier runs a revision's pre phase — pre-install on the first,
// pre-upgrade after, pre-rollback for a rollback — and says so with release.hooked before
// release.applied; a hook that fails ends the revision with release.failed at stage hook, once,
// naming the hook, and the previous revision's objects stay as they were.
func TestHooksAreEvents(t *testing.T) {
	e := newEnv(t)
	e.start(applier.Options{})
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}
	hooks := []events.BundleHook{hookJob("app-install", false, events.HookPreInstall), hookJob("app-upgrade", false, events.HookPreUpgrade),
		hookJob("app-rollback", false, events.HookPreRollback)}
	phaseOf := func(ev event.Event) string {
		require.Equal(t, events.TypeHooked, ev.Type(), string(ev.Data()))
		h, err := events.Data[events.Hooked](ev)
		require.NoError(t, err)
		require.Len(t, h.Hooks, 1)
		assert.Equal(t, events.HookSucceeded, h.Hooks[0].Result)
		return h.Phase + " " + h.Hooks[0].Name
	}
	req1 := e.request(rel, events.Options{})
	e.renderedWithHooks(req1, 1, []map[string]any{configMap(ns, "a", map[string]any{"v": "1"})}, hooks, events.Options{})
	got := e.answers(rel, req1.ID(), 2, 60*time.Second)
	assert.Equal(t, "pre-install app-install", phaseOf(got[0]))
	assert.Equal(t, events.TypeApplied, got[1].Type())

	req2 := e.request(rel, events.Options{})
	e.renderedWithHooks(req2, 2, []map[string]any{configMap(ns, "a", map[string]any{"v": "2"})}, hooks, events.Options{})
	got = e.answers(rel, req2.ID(), 2, 60*time.Second)
	assert.Equal(t, "pre-upgrade app-upgrade", phaseOf(got[0]))
	assert.Equal(t, events.TypeApplied, got[1].Type())

	failing := append(hooks[:1:1], hookJob("app-broken", true, events.HookPreUpgrade))
	published := e.countPublished(rel, events.TypeFailed)
	req3 := e.request(rel, events.Options{})
	e.renderedWithHooks(req3, 3, []map[string]any{configMap(ns, "a", map[string]any{"v": "3"})}, failing, events.Options{})
	ev := e.answer(rel, req3.ID())
	require.Equal(t, events.TypeFailed, ev.Type(), string(ev.Data()))
	f, err := events.Data[events.Failed](ev)
	require.NoError(t, err)
	assert.Equal(t, events.StageHook, f.Stage)
	assert.Equal(t, "hook_failed", f.Reason)
	assert.Contains(t, f.Message, "hook app-broken: the job failed")
	time.Sleep(300 * time.Millisecond)
	assert.EqualValues(t, 1, published.Load(), "release.failed published once")
	cm, err := kube.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), "a", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "2", cm.Data["v"], "the previous revision's objects stay")

	rb := e.rollbackRequest(rel, 1)
	e.renderedWithHooks(rb, 1, []map[string]any{configMap(ns, "a", map[string]any{"v": "1"})}, hooks, events.Options{})
	got = e.answers(rel, rb.ID(), 2, 60*time.Second)
	assert.Equal(t, "pre-rollback app-rollback", phaseOf(got[0]))
	assert.Equal(t, events.TypeApplied, got[1].Type())
}

// TestUninstallRunsDeleteHooks: an uninstall runs the revision's pre-delete hooks before its
// objects go and its post-delete hooks after, each phase a release.hooked before
// release.uninstalled; a pre-delete hook that fails ends the uninstall at stage hook with every
// object still there.
func TestUninstallRunsDeleteHooks(t *testing.T) {
	e := newEnv(t)
	e.start(applier.Options{})
	ns := kube.Namespace(t)
	for _, tc := range []struct {
		name string
		fail bool
	}{{"ok", false}, {"broken", true}} {
		t.Run(tc.name, func(t *testing.T) {
			rel := events.Release{Namespace: ns, Name: tc.name}
			hooks := []events.BundleHook{hookJob(tc.name+"-pre-delete", tc.fail, events.HookPreDelete), hookJob(tc.name+"-post-delete", false, events.HookPostDelete)}
			req := e.request(rel, events.Options{})
			e.renderedWithHooks(req, 1, []map[string]any{configMap(ns, tc.name, map[string]any{"v": "1"})}, hooks, events.Options{})
			require.Equal(t, events.TypeApplied, e.answer(rel, req.ID()).Type())

			un := e.uninstallRequest(rel)
			if tc.fail {
				ev := e.answer(rel, un.ID())
				require.Equal(t, events.TypeFailed, ev.Type(), string(ev.Data()))
				f, err := events.Data[events.Failed](ev)
				require.NoError(t, err)
				assert.Equal(t, events.StageHook, f.Stage)
				assert.Contains(t, f.Message, "hook broken-pre-delete: the job failed")
				_, err = kube.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), tc.name, metav1.GetOptions{})
				assert.NoError(t, err, "nothing deleted")
				return
			}
			got := e.answers(rel, un.ID(), 3, 60*time.Second)
			var seen []string
			for _, ev := range got {
				s := ev.Type()
				if ev.Type() == events.TypeHooked {
					h, err := events.Data[events.Hooked](ev)
					require.NoError(t, err)
					s += " " + h.Phase + " " + h.Hooks[0].Name
				}
				seen = append(seen, s)
			}
			assert.Equal(t, []string{"release.hooked pre-delete ok-pre-delete", "release.hooked post-delete ok-post-delete", "release.uninstalled"}, seen)
			_, err := kube.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), tc.name, metav1.GetOptions{})
			assert.True(t, apierrors.IsNotFound(err), "deleted")
		})
	}
}

// TestOlderRevisionIsSuperseded: two release.rendered of one release at once: the newer is
// applied, the older dropped with release.superseded.
func TestOlderRevisionIsSuperseded(t *testing.T) {
	e := newEnv(t)
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}
	req1 := e.request(rel, events.Options{})
	req2 := e.request(rel, events.Options{})
	e.rendered(req1, 1, []map[string]any{configMap(ns, "a", map[string]any{"v": "1"})}, events.Options{})
	e.rendered(req2, 2, []map[string]any{configMap(ns, "a", map[string]any{"v": "2"})}, events.Options{})
	e.start(applier.Options{})
	old := e.answer(rel, req1.ID())
	require.Equal(t, events.TypeSuperseded, old.Type(), string(old.Data()))
	s, err := events.Data[events.Superseded](old)
	require.NoError(t, err)
	assert.Equal(t, 2, s.ByRevision)
	require.Equal(t, events.TypeApplied, e.answer(rel, req2.ID()).Type())
	cm, err := kube.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), "a", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "2", cm.Data["v"])
}

// TestCrashedApplierNeverLocksTheRelease: a replica that crashed holding the release's lease
// (never renewed, never released) delays the next revision by no more than the lease's TTL; and
// an applier stopped in the middle of applying leaves the revision to a fresh one, which
// finishes it.
func TestCrashedApplierNeverLocksTheRelease(t *testing.T) {
	e := newEnv(t)
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}

	crashed, err := events.NewLeases(t.Context(), e.js, events.Names{}, "applier/crashed")
	require.NoError(t, err)
	_, err = crashed.Acquire(t.Context(), "apply."+ns+".app", 3*time.Second, "revision 0")
	require.NoError(t, err)
	e.start(applier.Options{})
	req := e.request(rel, events.Options{})
	start := time.Now()
	e.rendered(req, 1, []map[string]any{configMap(ns, "a", nil)}, events.Options{})
	require.Equal(t, events.TypeApplied, e.answer(rel, req.ID()).Type())
	assert.GreaterOrEqual(t, time.Since(start), 2*time.Second, "it waited for the crashed holder's lease to expire")

	// Stopped mid-apply: many objects, the applier's context cancelled once it holds the lease.
	e2 := newEnv(t)
	stop := e2.start(applier.Options{})
	var objs []map[string]any
	for i := range 300 {
		objs = append(objs, configMap(ns, fmt.Sprintf("many-%d", i), nil))
	}
	req2 := e2.request(rel, events.Options{})
	e2.rendered(req2, 1, objs, events.Options{})
	leases, err := events.NewLeases(t.Context(), e2.js, events.Names{}, "observer")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		h, err := leases.Holder(t.Context(), "apply."+ns+".app")
		return err == nil && h != nil
	}, 30*time.Second, 10*time.Millisecond)
	stop()
	e2.start(applier.Options{Holder: "applier/fresh"})
	got := e2.answer(rel, req2.ID())
	require.Equal(t, events.TypeApplied, got.Type(), string(got.Data()))
	applied, err := events.Data[events.Applied](got)
	require.NoError(t, err)
	assert.Len(t, applied.Inventory, 300)
}

// TestDryRunDiffs: a revision with options.dryRun gets release.diffed and changes nothing.
func TestDryRunDiffs(t *testing.T) {
	e := newEnv(t)
	e.start(applier.Options{})
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}
	req1 := e.request(rel, events.Options{})
	e.rendered(req1, 1, []map[string]any{configMap(ns, "a", map[string]any{"v": "1"}), configMap(ns, "gone", nil)}, events.Options{})
	require.Equal(t, events.TypeApplied, e.answer(rel, req1.ID()).Type())

	dry := events.Options{DryRun: true}
	req2 := e.request(rel, dry)
	e.rendered(req2, 2, []map[string]any{configMap(ns, "a", map[string]any{"v": "2"}), configMap(ns, "new", nil)}, dry)
	got := e.answer(rel, req2.ID())
	require.Equal(t, events.TypeDiffed, got.Type(), string(got.Data()))
	d, err := events.Data[events.Diffed](got)
	require.NoError(t, err)
	actions := map[string]string{}
	for _, o := range d.Objects {
		actions[o.Name] = o.Action
	}
	assert.Equal(t, map[string]string{"a": "update", "new": "create", "gone": "prune"}, actions)
	cm, err := kube.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), "a", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "1", cm.Data["v"])
	_, err = kube.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), "new", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err))
}

// TestUninstall deletes what the release applied, keeps what is annotated to stay, and replaces
// the release's inventory by a tombstone.
func TestUninstall(t *testing.T) {
	e := newEnv(t)
	e.start(applier.Options{})
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}
	kept := configMap(ns, "kept", nil)
	kept["metadata"].(map[string]any)["annotations"] = map[string]any{"troupe.dev/keep": "true"}
	req := e.request(rel, events.Options{})
	e.rendered(req, 1, []map[string]any{configMap(ns, "a", nil), kept}, events.Options{})
	require.Equal(t, events.TypeApplied, e.answer(rel, req.ID()).Type())

	un, err := events.NewEvent("troupe/test", events.TypeUninstallRequested, rel, events.UninstallRequested{})
	require.NoError(t, err)
	_, err = events.NewPublisher(e.js, events.Names{}).Publish(t.Context(), un)
	require.NoError(t, err)
	got := e.answer(rel, un.ID())
	require.Equal(t, events.TypeUninstalled, got.Type(), string(got.Data()))
	u, err := events.Data[events.Uninstalled](got)
	require.NoError(t, err)
	require.Len(t, u.Deleted, 1)
	assert.Equal(t, "a", u.Deleted[0].Name)
	require.Len(t, u.Kept, 1)
	assert.Equal(t, "kept", u.Kept[0].Name)
	require.Eventually(t, func() bool {
		_, err := kube.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), "a", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	}, 10*time.Second, 100*time.Millisecond)
	kv, err := e.js.KeyValue(t.Context(), events.KVInventory)
	require.NoError(t, err)
	entry, err := kv.Get(t.Context(), ns+".app")
	require.NoError(t, err)
	var rec applier.Record
	require.NoError(t, json.Unmarshal(entry.Value(), &rec))
	assert.Empty(t, rec.All(), "the release has no objects")
	require.NotNil(t, rec.Uninstalled, "a tombstone")
	assert.Equal(t, un.ID(), rec.Uninstalled.Request)
}

// TestUnreachableClusterFailsWithinTheTimeout: an API server that does not answer is retried
// with backoff, and the revision fails (cluster_unreachable) within its timeout — never stuck.
func TestUnreachableClusterFailsWithinTheTimeout(t *testing.T) {
	e := newEnv(t)
	dead := rest.CopyConfig(kube.Config)
	dead.Host = "https://127.0.0.1:1" // nothing listens there
	dead.Timeout = time.Second
	o := applier.Options{LeaseTTL: 2 * time.Second}
	o.Subscriber.AckWait = 3 * time.Second
	o.Subscriber.Backoff = []time.Duration{200 * time.Millisecond}
	o.Subscriber.MaxDeliver = 1000 // the revision's timeout, not the deliveries, must end it
	svc, err := applier.New(t.Context(), e.js, dead, o)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- svc.Start(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	<-svc.Ready()

	rel := events.Release{Namespace: "prod", Name: "app"}
	published := e.countPublished(rel, events.TypeFailed)
	opts := events.Options{Timeout: events.Duration(3 * time.Second)}
	req := e.request(rel, opts)
	start := time.Now()
	e.rendered(req, 1, []map[string]any{configMap("prod", "a", nil)}, opts)
	got := e.answer(rel, req.ID())
	require.Equal(t, events.TypeFailed, got.Type(), string(got.Data()))
	f, err := events.Data[events.Failed](got)
	require.NoError(t, err)
	assert.Equal(t, "cluster_unreachable", f.Reason)
	assert.Contains(t, f.Message, "127.0.0.1:1")
	assert.Less(t, time.Since(start), 20*time.Second, "failed soon after the 3s timeout")
	assert.GreaterOrEqual(t, time.Since(start), 2*time.Second, "retried until the timeout")
	time.Sleep(300 * time.Millisecond)
	assert.EqualValues(t, 1, published.Load(), "release.failed published once")
}

// uninstallRequest publishes a release.uninstall.requested of rel and returns it.
func (e *env) uninstallRequest(rel events.Release) event.Event {
	e.t.Helper()
	un, err := events.NewEvent("troupe/test", events.TypeUninstallRequested, rel, events.UninstallRequested{})
	require.NoError(e.t, err)
	_, err = events.NewPublisher(e.js, events.Names{}).Publish(e.t.Context(), un)
	require.NoError(e.t, err)
	return un
}

// superseded waits for the applier's answer to req, which must be release.superseded, and
// returns its payload.
func (e *env) superseded(rel events.Release, req event.Event) *events.Superseded {
	e.t.Helper()
	got := e.answer(rel, req.ID())
	require.Equal(e.t, events.TypeSuperseded, got.Type(), string(got.Data()))
	s, err := events.Data[events.Superseded](got)
	require.NoError(e.t, err)
	return s
}

// rollbackRequest publishes a release.rollback.requested of rel to revision to, as the CLI does.
func (e *env) rollbackRequest(rel events.Release, to int) event.Event {
	e.t.Helper()
	rb, err := events.NewEvent("troupe/test", events.TypeRollbackRequested, rel, events.RollbackRequested{TargetRevision: to})
	require.NoError(e.t, err)
	_, err = events.NewPublisher(e.js, events.Names{}).Publish(e.t.Context(), rb)
	require.NoError(e.t, err)
	return rb
}

// TestNewestRequestWinsOverRollbacks: the order requests were made in decides, whichever the
// applier handles first. A rollback requested before revision 2, and handled after it (history
// was down), does not undo it: superseded by revision 2. Revision 3, requested before a second
// rollback and handled after it, does not undo the rollback: superseded by it. (Found by the
// chaos run: a release left at revision 1 by a rollback requested before revisions 3 to 10.)
func TestNewestRequestWinsOverRollbacks(t *testing.T) {
	e := newEnv(t)
	e.start(applier.Options{})
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}
	v := func(n string) []map[string]any { return []map[string]any{configMap(ns, "a", map[string]any{"v": n})} }
	cm := func() string {
		got, err := kube.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), "a", metav1.GetOptions{})
		require.NoError(t, err)
		return got.Data["v"]
	}
	req1 := e.request(rel, events.Options{})
	e.rendered(req1, 1, v("1"), events.Options{})
	require.Equal(t, events.TypeApplied, e.answer(rel, req1.ID()).Type())

	rb1 := e.rollbackRequest(rel, 1)
	req2 := e.request(rel, events.Options{})
	e.rendered(req2, 2, v("2"), events.Options{})
	require.Equal(t, events.TypeApplied, e.answer(rel, req2.ID()).Type())
	e.rendered(rb1, 1, v("1"), events.Options{})
	assert.Equal(t, 2, e.superseded(rel, rb1).ByRevision)
	assert.Equal(t, "2", cm(), "revision 2 stays")

	req3 := e.request(rel, events.Options{})
	rb2 := e.rollbackRequest(rel, 1)
	e.rendered(rb2, 1, v("1"), events.Options{})
	require.Equal(t, events.TypeApplied, e.answer(rel, rb2.ID()).Type())
	e.rendered(req3, 3, v("3"), events.Options{})
	assert.Equal(t, rb2.ID(), e.superseded(rel, req3).ByRollback)
	assert.Equal(t, "1", cm(), "the rollback stays")

	// A rollback superseded by a newer rollback, both handled late.
	rb3 := e.rollbackRequest(rel, 2)
	rb4 := e.rollbackRequest(rel, 1)
	e.rendered(rb3, 2, v("2"), events.Options{})
	assert.Equal(t, rb4.ID(), e.superseded(rel, rb3).ByRollback)
	e.rendered(rb4, 1, v("1"), events.Options{})
	require.Equal(t, events.TypeApplied, e.answer(rel, rb4.ID()).Type())
	assert.Equal(t, "1", cm())

	// History's automatic rollback (after a failure) supersedes no request the user made before
	// it: that one is newer in intent.
	req4 := e.request(rel, events.Options{})
	auto, err := events.NewEvent("troupe/history", events.TypeRollbackRequested, rel, events.RollbackRequested{TargetRevision: 1, Automatic: true})
	require.NoError(t, err)
	_, err = events.NewPublisher(e.js, events.Names{}).Publish(t.Context(), auto)
	require.NoError(t, err)
	e.rendered(req4, 4, v("4"), events.Options{})
	require.Equal(t, events.TypeApplied, e.answer(rel, req4.ID()).Type())
	assert.Equal(t, "4", cm())
}

// TestUninstallLeavesATombstone: a release requested then uninstalled back to back, its
// release.rendered delivered after the uninstall ran: nothing is applied, the revision ends
// superseded naming the uninstall; a request after the uninstall installs the release again.
func TestUninstallLeavesATombstone(t *testing.T) {
	e := newEnv(t)
	e.start(applier.Options{})
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}
	req1 := e.request(rel, events.Options{})
	un := e.uninstallRequest(rel)
	require.Equal(t, events.TypeUninstalled, e.answer(rel, un.ID()).Type())
	e.rendered(req1, 1, []map[string]any{configMap(ns, "a", nil)}, events.Options{})
	got := e.answer(rel, req1.ID())
	require.Equal(t, events.TypeSuperseded, got.Type(), string(got.Data()))
	s, err := events.Data[events.Superseded](got)
	require.NoError(t, err)
	assert.Equal(t, events.StageApply, s.Stage)
	assert.Equal(t, un.ID(), s.ByUninstall)
	_, err = kube.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), "a", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "nothing applied: %v", err)

	req2 := e.request(rel, events.Options{})
	e.rendered(req2, 2, []map[string]any{configMap(ns, "a", nil)}, events.Options{})
	require.Equal(t, events.TypeApplied, e.answer(rel, req2.ID()).Type())
	_, err = kube.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), "a", metav1.GetOptions{})
	assert.NoError(t, err, "installed again")
}

// TestDryRunNeverSupersedesARealRequest: a real request, another real one, then a dry run: the
// first is superseded by the second (not let through because the newest request is a dry
// run), the second is applied though a dry run came after it, and the dry run gets its diff.
func TestDryRunNeverSupersedesARealRequest(t *testing.T) {
	e := newEnv(t)
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}
	dry := events.Options{DryRun: true}
	req1 := e.request(rel, events.Options{})
	req2 := e.request(rel, events.Options{})
	req3 := e.request(rel, dry)
	e.rendered(req1, 1, []map[string]any{configMap(ns, "a", map[string]any{"v": "1"})}, events.Options{})
	e.rendered(req2, 2, []map[string]any{configMap(ns, "a", map[string]any{"v": "2"})}, events.Options{})
	e.rendered(req3, 3, []map[string]any{configMap(ns, "a", map[string]any{"v": "3"})}, dry)
	e.start(applier.Options{})
	old := e.answer(rel, req1.ID())
	require.Equal(t, events.TypeSuperseded, old.Type(), string(old.Data()))
	s, err := events.Data[events.Superseded](old)
	require.NoError(t, err)
	assert.Equal(t, 2, s.ByRevision, "the newer real request, not the dry run")
	require.Equal(t, events.TypeApplied, e.answer(rel, req2.ID()).Type())
	require.Equal(t, events.TypeDiffed, e.answer(rel, req3.ID()).Type())
	cm, err := kube.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), "a", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "2", cm.Data["v"])
}
