package health_test

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/nats-io/nats-server/v2/server"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/natstest"
	"github.com/troupe-dev/troupe/services/applier/apply"
	"github.com/troupe-dev/troupe/services/health"
	"github.com/troupe-dev/troupe/services/renderer/render"
	"github.com/troupe-dev/troupe/test/cluster"
)

// kube is the cluster the tests that need one share: started by the first of them (newEnv),
// stopped once every test ran. The tests of pure functions (evaluate, compute) run without one.
var (
	kube      *cluster.Cluster
	kubeErr   error
	startKube sync.Once
)

func TestMain(m *testing.M) {
	code := m.Run()
	if kube != nil {
		kube.Stop()
	}
	os.Exit(code)
}

// env is one test's NATS, with an applier library to put revisions in the cluster.
type env struct {
	t       *testing.T
	srv     *server.Server
	js      jetstream.JetStream
	applier *apply.Applier
}

func newEnv(t *testing.T) *env {
	t.Helper()
	startKube.Do(func() {
		started := time.Now()
		kube, kubeErr = cluster.Start(context.Background(), cluster.Options{})
		t.Logf("cluster: started in %s", time.Since(started).Round(10*time.Millisecond))
	})
	require.NoError(t, kubeErr, "the cluster")
	srv, js := startNATS(t)
	a, err := apply.New(kube.Config, apply.Options{})
	require.NoError(t, err)
	return &env{t: t, srv: srv, js: js, applier: a}
}

// startNATS starts an embedded NATS provisioned as natstest does, but whose events stream stores
// every copy of an event however close the copies come (the shortest duplicate window, 100ms): the
// tests count what health published, not what the stream's 2-minute window left of it.
func startNATS(t *testing.T) (*server.Server, jetstream.JetStream) {
	t.Helper()
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv)
	_, err := events.Provision(t.Context(), js, events.ProvisionConfig{Duplicates: 100 * time.Millisecond})
	require.NoError(t, err)
	return srv, js
}

// ends returns every terminal event (release.ready, release.failed, release.superseded) the
// stream holds, of any release, by the id of the event it answers (for health's, the
// release.applied of the revision): each message counted, whatever its id.
func ends(t *testing.T, js jetstream.JetStream) map[string][]event.Event {
	t.Helper()
	var filters []string
	for _, typ := range []string{events.TypeReady, events.TypeFailed, events.TypeSuperseded} {
		f, err := events.Names{}.TypeFilter(typ)
		require.NoError(t, err)
		filters = append(filters, f)
	}
	c, err := js.OrderedConsumer(t.Context(), events.StreamName, jetstream.OrderedConsumerConfig{FilterSubjects: filters})
	require.NoError(t, err)
	out := map[string][]event.Event{}
	for pending := c.CachedInfo().NumPending; pending > 0; pending-- {
		msg, err := c.Next()
		require.NoError(t, err)
		ev, err := events.Names{}.Decode(msg.Subject(), msg.Headers(), msg.Data())
		require.NoError(t, err)
		out[events.CausationID(ev)] = append(out[events.CausationID(ev)], ev)
	}
	return out
}

// TestEndsCountsEveryCopy: the counts the tests assert on can fail. A second release.ready of one
// revision is counted whether its id differs or is the same one published again.
func TestEndsCountsEveryCopy(t *testing.T) {
	_, js := startNATS(t)
	pub := events.NewPublisher(js, events.Names{})
	rel := events.Release{Namespace: "prod", Name: "web"}
	req, err := events.NewEvent("troupe/test", events.TypeRequested, rel, events.Requested{
		Source: events.Source{Manifests: &events.ManifestsSource{YAML: "{}"}}})
	require.NoError(t, err)
	events.WithRevision(&req, 1)
	applied, err := events.Derive(req, "troupe/applier", events.TypeApplied, events.Applied{Bundle: "sha256:" + strings.Repeat("0", 64)})
	require.NoError(t, err)
	ready, err := events.Derive(applied, "troupe/health", events.TypeReady, events.Ready{Objects: 1})
	require.NoError(t, err)
	_, err = pub.Publish(t.Context(), ready)
	require.NoError(t, err)
	require.Len(t, ends(t, js)[applied.ID()], 1)

	// Copies written past the SDK (its claim would refuse another end of the flow): what a
	// second, careless publisher would store.
	raw := func(e event.Event) {
		t.Helper()
		msg, err := events.Names{}.Message(e)
		require.NoError(t, err)
		_, err = js.PublishMsg(t.Context(), msg, jetstream.WithMsgID(e.ID()))
		require.NoError(t, err)
	}
	other := ready.Clone()
	other.SetID(ready.ID() + "-again")
	raw(other)
	assert.Len(t, ends(t, js)[applied.ID()], 2, "a copy with another id")
	time.Sleep(150 * time.Millisecond) // past the test stream's duplicate window
	raw(ready)
	assert.Len(t, ends(t, js)[applied.ID()], 3, "a copy with the same id")
}

// start runs a health watcher until the test ends, or until the returned cancel.
func (e *env) start() (svc *health.Service, cancel func()) {
	e.t.Helper()
	return e.startAs(kube.Config)
}

// startAs runs a health watcher that reaches the cluster with cfg.
func (e *env) startAs(cfg *rest.Config) (svc *health.Service, cancel func()) {
	e.t.Helper()
	o := health.Options{ProgressInterval: 200 * time.Millisecond}
	o.Subscriber.AckWait = 3 * time.Second
	o.Subscriber.DeliverAll = true
	svc, err := health.New(e.t.Context(), e.js, cfg, o)
	require.NoError(e.t, err)
	return svc, natstest.Run(e.t, svc)
}

// apply applies objs as revision of rel with the applier library, and publishes the
// release.requested and release.applied the applier service would have.
func (e *env) apply(rel events.Release, revision int, objs []map[string]any, opts events.Options) event.Event {
	e.t.Helper()
	req := e.request(rel, revision, opts)
	res, err := e.applier.Apply(e.t.Context(), apply.Request{Release: rel, Revision: revision, Objects: objs, Options: opts})
	require.NoError(e.t, err)
	return e.announce(req, res.Inventory, opts)
}

// request makes the release.requested of a revision (published by announce).
func (e *env) request(rel events.Release, revision int, opts events.Options) event.Event {
	e.t.Helper()
	req, err := events.NewEvent("troupe/test", events.TypeRequested, rel, events.Requested{
		Source: events.Source{Manifests: &events.ManifestsSource{YAML: "{}"}}, Options: opts})
	require.NoError(e.t, err)
	events.WithRevision(&req, revision)
	return req
}

// announce publishes req and the release.applied that answers it, with inventory as what was
// applied, whatever the cluster holds.
func (e *env) announce(req event.Event, inventory []events.AppliedObject, opts events.Options) event.Event {
	e.t.Helper()
	applied, err := events.Derive(req, "troupe/applier", events.TypeApplied, events.Applied{
		Bundle:    "sha256:" + strings.Repeat("0", 64),
		Inventory: inventory, Options: opts})
	require.NoError(e.t, err)
	pub := events.NewPublisher(e.js, events.Names{})
	_, err = pub.Publish(e.t.Context(), req)
	require.NoError(e.t, err)
	_, err = pub.Publish(e.t.Context(), applied)
	require.NoError(e.t, err)
	return applied
}

// watch collects the health watcher's events of rel as they come.
type watch struct {
	t    *testing.T
	msgs jetstream.MessagesContext
}

func (e *env) watch(rel events.Release) *watch {
	e.t.Helper()
	f, err := events.Names{}.ReleaseFilter(rel)
	require.NoError(e.t, err)
	c, err := e.js.OrderedConsumer(e.t.Context(), events.StreamName, jetstream.OrderedConsumerConfig{FilterSubjects: []string{f}})
	require.NoError(e.t, err)
	msgs, err := c.Messages()
	require.NoError(e.t, err)
	e.t.Cleanup(msgs.Stop)
	return &watch{t: e.t, msgs: msgs}
}

// next returns the watcher's next event of one of types (others are skipped), failing the test
// if none comes within wait.
func (w *watch) next(wait time.Duration, types ...string) event.Event {
	w.t.Helper()
	got := make(chan event.Event, 1)
	go func() {
		for {
			msg, err := w.msgs.Next()
			if err != nil {
				close(got)
				return
			}
			ev, err := events.Names{}.Decode(msg.Subject(), msg.Headers(), msg.Data())
			if err == nil && ev.Source() == "troupe/health" && slices.Contains(types, ev.Type()) {
				got <- ev
				return
			}
		}
	}()
	select {
	case ev, ok := <-got:
		require.True(w.t, ok, "stream closed")
		return ev
	case <-time.After(wait):
		w.msgs.Stop()
		w.t.Fatalf("no %v from health within %s", types, wait)
	}
	return event.Event{}
}

func fixtures(t *testing.T) string {
	wd, err := os.Getwd()
	require.NoError(t, err)
	return filepath.Join(wd, "..", "..", "..", "shared", "fixtures")
}

func deployment(ns, name string, fault string) map[string]any {
	annotations := map[string]any{}
	if fault != "" {
		annotations[cluster.FaultAnnotation] = fault
	}
	return map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": map[string]any{"name": name, "namespace": ns},
		"spec": map[string]any{"replicas": int64(1), "selector": map[string]any{"matchLabels": map[string]any{"app": name}},
			"template": map[string]any{"metadata": map[string]any{"labels": map[string]any{"app": name}, "annotations": annotations},
				"spec": map[string]any{"containers": []any{map[string]any{"name": "app", "image": "nginx"}}}}}}
}

func configMap(ns, name string) map[string]any {
	return map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": name, "namespace": ns}, "data": map[string]any{"k": "v"}}
}

func data[T any, P interface {
	*T
	events.Payload
}](t *testing.T, e event.Event) *T {
	t.Helper()
	v, err := events.Data[T, P](e)
	require.NoError(t, err)
	return v
}

// TestPodinfoBecomesReady: the podinfo chart applied, health reports progress and then ready,
// with the time from the request.
func TestPodinfoBecomesReady(t *testing.T) {
	e := newEnv(t)
	e.start()
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "podinfo"}
	r, err := render.New(render.Options{SourceRoots: []string{fixtures(t)}})
	require.NoError(t, err)
	out, err := r.Render(t.Context(), render.Input{Release: rel, Revision: 1, Request: events.Requested{
		Source: events.Source{Helm: &events.HelmSource{Path: filepath.Join(fixtures(t), "podinfo/charts/podinfo")}}}})
	require.NoError(t, err)
	b, err := events.ReadBundle(out.Bundle)
	require.NoError(t, err)

	w := e.watch(rel)
	applied := e.apply(rel, 1, b.Objects, events.Options{})
	progressing := w.next(30*time.Second, events.TypeProgressing, events.TypeReady)
	require.Equal(t, events.TypeProgressing, progressing.Type(), "progress is reported before ready")
	p := data[events.Progressing](t, progressing)
	assert.Equal(t, len(b.Objects), p.Total)
	assert.Less(t, p.Ready, p.Total)

	ready := w.next(60*time.Second, events.TypeReady, events.TypeFailed)
	require.Equal(t, events.TypeReady, ready.Type(), string(ready.Data()))
	assert.Equal(t, applied.ID(), events.CausationID(ready))
	assert.Equal(t, 1, events.Revision(ready))
	rd := data[events.Ready](t, ready)
	assert.Equal(t, len(b.Objects), rd.Objects)
	assert.Positive(t, rd.TimeToReady)
	assert.LessOrEqual(t, time.Duration(rd.TimeToReady), time.Since(events.RequestTime(applied)))

	dep, err := kube.Client.AppsV1().Deployments(ns).Get(t.Context(), "podinfo", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, *dep.Spec.Replicas, dep.Status.AvailableReplicas, "ready means the Deployment is available")
}

// TestFailsFast: a pod that crash-loops or cannot pull its image fails the revision at once — the
// timeout is 10 minutes — naming the Deployment, the pod, the container and the reason.
func TestFailsFast(t *testing.T) {
	e := newEnv(t)
	e.start()
	for _, tc := range []struct{ fault, reason, waiting string }{
		{cluster.FaultCrashLoop, health.ReasonCrashLoop, "CrashLoopBackOff"},
		{cluster.FaultImagePull, health.ReasonImagePull, "ImagePullBackOff"},
	} {
		t.Run(tc.fault, func(t *testing.T) {
			ns := kube.Namespace(t)
			rel := events.Release{Namespace: ns, Name: "app"}
			w := e.watch(rel)
			e.apply(rel, 1, []map[string]any{configMap(ns, "config"), deployment(ns, "web", tc.fault)}, events.Options{Timeout: events.Duration(10 * time.Minute)})
			got := w.next(60*time.Second, events.TypeReady, events.TypeFailed)
			require.Equal(t, events.TypeFailed, got.Type())
			f := data[events.Failed](t, got)
			assert.Equal(t, events.StageHealth, f.Stage)
			assert.Equal(t, tc.reason, f.Reason)
			assert.True(t, strings.HasPrefix(f.Message, "Deployment "+ns+"/web"), "the message says what, the release is beside it: %s", f.Message)
			assert.Contains(t, f.Message, "pod web-")
			assert.Contains(t, f.Message, "container app: "+tc.waiting)
			require.Len(t, f.Objects, 1)
			assert.Equal(t, "Deployment", f.Objects[0].Kind)
			assert.Equal(t, "Failed", f.Objects[0].Status)
		})
	}
}

// TestPodWatchesAreShared: releases progressing at once share one watch of the cluster's pods
// and one of its ReplicaSets, not two per namespace, and a pod that cannot pull its image still
// fails its release fast through them; under PerNamespace, each namespace has its own, with the
// same result.
func TestPodWatchesAreShared(t *testing.T) {
	for _, tc := range []struct {
		perNamespace bool
		watches      int // with three releases progressing, one Deployment each
	}{
		{false, 3}, // Deployments, pods, ReplicaSets
		{true, 9},  // each of the three, in each of the three namespaces
	} {
		t.Run(fmt.Sprintf("perNamespace=%t", tc.perNamespace), func(t *testing.T) {
			e := newEnv(t)
			o := health.Options{ProgressInterval: 200 * time.Millisecond, PerNamespace: tc.perNamespace}
			o.Subscriber.DeliverAll = true
			svc, err := health.New(t.Context(), e.js, kube.Config, o)
			require.NoError(t, err)
			natstest.Run(t, svc)
			var ws []*watch
			for range 3 {
				ns := kube.Namespace(t)
				rel := events.Release{Namespace: ns, Name: "app"}
				ws = append(ws, e.watch(rel))
				e.apply(rel, 1, []map[string]any{deployment(ns, "web", cluster.FaultNeverReady)}, events.Options{Timeout: events.Duration(10 * time.Minute)})
			}
			for _, w := range ws {
				w.next(30*time.Second, events.TypeProgressing)
			}
			assert.Equal(t, tc.watches, svc.Watches())

			ns := kube.Namespace(t)
			rel := events.Release{Namespace: ns, Name: "app"}
			w := e.watch(rel)
			e.apply(rel, 1, []map[string]any{deployment(ns, "web", cluster.FaultImagePull)}, events.Options{Timeout: events.Duration(10 * time.Minute)})
			got := w.next(60*time.Second, events.TypeReady, events.TypeFailed)
			require.Equal(t, events.TypeFailed, got.Type())
			assert.Equal(t, health.ReasonImagePull, data[events.Failed](t, got).Reason)
		})
	}
}

// TestNeverReadyTimesOut: a pod that runs but never becomes ready fails the revision at its
// timeout, naming what was not ready.
func TestNeverReadyTimesOut(t *testing.T) {
	e := newEnv(t)
	e.start()
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}
	w := e.watch(rel)
	e.apply(rel, 1, []map[string]any{configMap(ns, "config"), deployment(ns, "web", cluster.FaultNeverReady)}, events.Options{Timeout: events.Duration(4 * time.Second)})
	got := w.next(60*time.Second, events.TypeReady, events.TypeFailed)
	require.Equal(t, events.TypeFailed, got.Type())
	f := data[events.Failed](t, got)
	assert.Equal(t, health.ReasonTimeout, f.Reason)
	assert.True(t, strings.HasPrefix(f.Message, "not ready after 4s"), f.Message)
	assert.Contains(t, f.Message, "Deployment "+ns+"/web")
	require.Len(t, f.Objects, 1, "only what was not ready")
	assert.Equal(t, "web", f.Objects[0].Name)
	assert.Equal(t, "InProgress", f.Objects[0].Status)
}

// TestEndedFlowIsNotEndedAgain: the deadline watchdog ended a revision first (its claim in the
// flows bucket); health, reaching the revision's timeout later, publishes no second terminal
// event, lets the revision go rather than retry, and goes on with the next.
func TestEndedFlowIsNotEndedAgain(t *testing.T) {
	e := newEnv(t)
	svc, _ := e.start()
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}
	w := e.watch(rel)
	first := e.apply(rel, 1, []map[string]any{deployment(ns, "web", cluster.FaultNeverReady)}, events.Options{Timeout: events.Duration(3 * time.Second)})
	progressing := w.next(30*time.Second, events.TypeProgressing)
	// As the watchdog does: from the flow's last step, so not an answer to the release.applied.
	ended, err := events.Derive(progressing, "troupe/deadlines", events.TypeFailed,
		events.Failed{Stage: events.StageHealth, Reason: "deadline_exceeded", Message: "health did not answer"})
	require.NoError(t, err)
	_, err = events.NewPublisher(e.js, events.Names{}).Publish(t.Context(), ended)
	require.NoError(t, err)

	require.Eventually(t, func() bool { return svc.Watches() == 0 }, 30*time.Second, 50*time.Millisecond, "revision 1 let go at its timeout")
	var got []event.Event
	for _, es := range ends(t, e.js) {
		for _, ev := range es {
			if events.CorrelationID(ev) == events.CorrelationID(first) {
				got = append(got, ev)
			}
		}
	}
	require.Len(t, got, 1, "one terminal event for revision 1")
	assert.Equal(t, ended.ID(), got[0].ID(), "the watchdog's")

	e.apply(rel, 2, []map[string]any{deployment(ns, "web", "")}, events.Options{})
	ready := w.next(60*time.Second, events.TypeReady, events.TypeFailed)
	require.Equal(t, events.TypeReady, ready.Type(), string(ready.Data()))
}

// TestJobAndCRD: a Job is ready once complete; a CRD once established.
func TestJobAndCRD(t *testing.T) {
	e := newEnv(t)
	e.start()
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "batch"}
	job := map[string]any{"apiVersion": "batch/v1", "kind": "Job", "metadata": map[string]any{"name": "migrate", "namespace": ns},
		"spec": map[string]any{"template": map[string]any{"spec": map[string]any{"restartPolicy": "Never",
			"containers": []any{map[string]any{"name": "migrate", "image": "busybox"}}}}}}
	crd := map[string]any{"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "widgets." + ns + ".example.com"},
		"spec": map[string]any{"group": ns + ".example.com", "scope": "Namespaced",
			"names": map[string]any{"plural": "widgets", "singular": "widget", "kind": "Widget"},
			"versions": []any{map[string]any{"name": "v1", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{"type": "object"}}}}}}
	t.Cleanup(func() {
		_ = kube.Client.Discovery().RESTClient().Delete().AbsPath("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets." + ns + ".example.com").Do(context.Background())
	})
	w := e.watch(rel)
	e.apply(rel, 1, []map[string]any{crd, job}, events.Options{})
	got := w.next(60*time.Second, events.TypeReady, events.TypeFailed)
	require.Equal(t, events.TypeReady, got.Type(), string(got.Data()))
	j, err := kube.Client.BatchV1().Jobs(ns).Get(t.Context(), "migrate", metav1.GetOptions{})
	require.NoError(t, err)
	assert.NotNil(t, j.Status.CompletionTime, "ready once the Job completed")
}

// TestNewerRevisionSupersedesTheWait: revision 1 never gets ready; revision 2's release.applied
// ends its wait with release.superseded, and revision 2 becomes ready.
func TestNewerRevisionSupersedesTheWait(t *testing.T) {
	e := newEnv(t)
	e.start()
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}
	w := e.watch(rel)
	first := e.apply(rel, 1, []map[string]any{deployment(ns, "web", cluster.FaultNeverReady)}, events.Options{})
	w.next(30*time.Second, events.TypeProgressing)
	second := e.apply(rel, 2, []map[string]any{deployment(ns, "web", "")}, events.Options{})

	sup := w.next(30*time.Second, events.TypeSuperseded, events.TypeReady, events.TypeFailed)
	require.Equal(t, events.TypeSuperseded, sup.Type())
	assert.Equal(t, first.ID(), events.CausationID(sup))
	s := data[events.Superseded](t, sup)
	assert.Equal(t, 2, s.ByRevision)
	assert.Equal(t, events.StageHealth, s.Stage)

	ready := w.next(60*time.Second, events.TypeReady, events.TypeFailed)
	require.Equal(t, events.TypeReady, ready.Type(), string(ready.Data()))
	assert.Equal(t, second.ID(), events.CausationID(ready))
}

// TestUninstallSupersedesTheWait: revision 1 never gets ready; the release's uninstall ends its
// wait with release.superseded naming the uninstall (not, minutes later, the deadline watchdog's
// deadline_exceeded), once, and lets the release go.
func TestUninstallSupersedesTheWait(t *testing.T) {
	e := newEnv(t)
	svc, _ := e.start()
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}
	w := e.watch(rel)
	first := e.apply(rel, 1, []map[string]any{deployment(ns, "web", cluster.FaultNeverReady)}, events.Options{})
	w.next(30*time.Second, events.TypeProgressing)
	gone := uninstalledOf(t, rel)
	_, err := events.NewPublisher(e.js, events.Names{}).Publish(t.Context(), gone)
	require.NoError(t, err)

	sup := w.next(30*time.Second, events.TypeSuperseded, events.TypeReady, events.TypeFailed)
	require.Equal(t, events.TypeSuperseded, sup.Type())
	assert.Equal(t, first.ID(), events.CausationID(sup))
	s := data[events.Superseded](t, sup)
	assert.Equal(t, events.CorrelationID(gone), s.ByUninstall)
	assert.Equal(t, events.StageHealth, s.Stage)
	require.Eventually(t, func() bool { return svc.Watches() == 0 }, 30*time.Second, 50*time.Millisecond, "the release's watches let go")
	assert.Len(t, ends(t, e.js)[first.ID()], 1, "one terminal event for revision 1")
}

// TestDegradedAndRecovered: after ready, deleting the Deployment by hand publishes
// release.degraded naming it; putting it back publishes release.recovered. Uninstalling lets the
// release's watches go.
func TestDegradedAndRecovered(t *testing.T) {
	e := newEnv(t)
	svc, _ := e.start()
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}
	objs := []map[string]any{configMap(ns, "config"), deployment(ns, "web", "")}
	w := e.watch(rel)
	applied := e.apply(rel, 1, objs, events.Options{})
	require.Equal(t, events.TypeReady, w.next(60*time.Second, events.TypeReady, events.TypeFailed).Type())
	watching := svc.Watches()

	require.NoError(t, kube.Client.AppsV1().Deployments(ns).Delete(t.Context(), "web", metav1.DeleteOptions{}))
	got := w.next(30*time.Second, events.TypeDegraded)
	assert.Equal(t, applied.ID(), events.CausationID(got))
	d := data[events.Degraded](t, got)
	require.Len(t, d.Objects, 1)
	assert.Equal(t, "web", d.Objects[0].Name)
	assert.Contains(t, []string{"NotFound", "Terminating"}, d.Objects[0].Status)

	_, err := e.applier.Apply(t.Context(), apply.Request{Release: rel, Revision: 1, Objects: objs})
	require.NoError(t, err)
	got = w.next(60*time.Second, events.TypeRecovered)
	r := data[events.Recovered](t, got)
	require.Len(t, r.Objects, 1)
	assert.Equal(t, "web", r.Objects[0].Name)
	assert.Equal(t, "Current", r.Objects[0].Status)

	uninstalled := uninstalledOf(t, rel)
	_, err = events.NewPublisher(e.js, events.Names{}).Publish(t.Context(), uninstalled)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return svc.Watches() < watching }, 10*time.Second, 50*time.Millisecond,
		"the release's watches are let go")
	kv, err := e.js.KeyValue(t.Context(), events.KVHealth)
	require.NoError(t, err)
	_, err = kv.Get(t.Context(), ns+".app")
	assert.ErrorIs(t, err, jetstream.ErrKeyNotFound)
}

// TestRestartResumes: a watcher stopped while a revision progresses; a new one resumes it from
// the KV bucket and publishes exactly one release.ready. A watcher that died between publishing
// ready and recording it does not publish a second one.
func TestRestartResumes(t *testing.T) {
	e := newEnv(t)
	_, stop := e.start()
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}
	w := e.watch(rel)
	applied := e.apply(rel, 1, []map[string]any{deployment(ns, "web", "")}, events.Options{})
	w.next(30*time.Second, events.TypeProgressing)
	stop()

	_, stop = e.start()
	ready := w.next(60*time.Second, events.TypeReady, events.TypeFailed)
	require.Equal(t, events.TypeReady, ready.Type())
	assert.Equal(t, applied.ID(), events.CausationID(ready))

	// As if the watcher had died after publishing ready, before recording it.
	kv, err := e.js.KeyValue(t.Context(), events.KVHealth)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		entry, err := kv.Get(t.Context(), ns+".app")
		return err == nil && json.Valid(entry.Value()) && phase(entry.Value()) == "ready"
	}, 10*time.Second, 50*time.Millisecond)
	stop()
	entry, err := kv.Get(t.Context(), ns+".app")
	require.NoError(t, err)
	var rec map[string]any
	require.NoError(t, json.Unmarshal(entry.Value(), &rec))
	rec["phase"] = "progressing"
	raw, err := json.Marshal(rec)
	require.NoError(t, err)
	_, err = kv.Put(t.Context(), ns+".app", raw)
	require.NoError(t, err)
	e.start()
	require.Eventually(t, func() bool {
		entry, err := kv.Get(t.Context(), ns+".app")
		return err == nil && phase(entry.Value()) == "ready"
	}, 30*time.Second, 50*time.Millisecond, "the resumed watcher found it ready")

	assert.Len(t, ends(t, e.js)[applied.ID()], 1, "exactly one end of the revision, counting every copy")
}

func phase(raw []byte) string {
	var rec struct {
		Phase string `json:"phase"`
	}
	_ = json.Unmarshal(raw, &rec)
	return rec.Phase
}

// TestProgressDeadlineFailsFast: a Deployment past its progressDeadlineSeconds (the controller
// says ProgressDeadlineExceeded) fails the revision then, not at the revision's timeout.
func TestProgressDeadlineFailsFast(t *testing.T) {
	e := newEnv(t)
	e.start()
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}
	dep := deployment(ns, "web", cluster.FaultNeverReady)
	dep["spec"].(map[string]any)["progressDeadlineSeconds"] = int64(2)
	w := e.watch(rel)
	e.apply(rel, 1, []map[string]any{dep}, events.Options{Timeout: events.Duration(10 * time.Minute)})
	got := w.next(60*time.Second, events.TypeReady, events.TypeFailed)
	require.Equal(t, events.TypeFailed, got.Type())
	f := data[events.Failed](t, got)
	assert.Equal(t, health.ReasonProgressDeadline, f.Reason)
	assert.Contains(t, f.Message, "Deployment "+ns+"/web")
	assert.Contains(t, f.Message, "Progress deadline exceeded")
}

// TestWatchForbidden: a watcher whose RBAC does not let it watch a kind of the inventory fails
// the revision at its timeout saying so, not "not ready".
func TestWatchForbidden(t *testing.T) {
	e := newEnv(t)
	ns := kube.Namespace(t)
	_, err := kube.Client.CoreV1().ServiceAccounts(ns).Create(t.Context(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "watcher"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	cfg := rest.CopyConfig(kube.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + ns + ":watcher"}
	e.startAs(cfg)
	rel := events.Release{Namespace: ns, Name: "app"}
	w := e.watch(rel)
	e.apply(rel, 1, []map[string]any{configMap(ns, "config")}, events.Options{Timeout: events.Duration(3 * time.Second)})
	got := w.next(60*time.Second, events.TypeReady, events.TypeFailed)
	require.Equal(t, events.TypeFailed, got.Type())
	f := data[events.Failed](t, got)
	assert.Equal(t, health.ReasonTimeout, f.Reason)
	assert.Contains(t, f.Message, "cannot watch configmaps")
	assert.Contains(t, f.Message, "forbidden")
}

// uninstalledOf is the applier's release.uninstalled for a new uninstall request of rel: the end of
// a flow of its own, as in the system (not a reaction to a revision's events).
func uninstalledOf(t *testing.T, rel events.Release) event.Event {
	t.Helper()
	req, err := events.NewEvent("troupe/cli", events.TypeUninstallRequested, rel, events.UninstallRequested{})
	require.NoError(t, err)
	out, err := events.Derive(req, "troupe/applier", events.TypeUninstalled, events.Uninstalled{})
	require.NoError(t, err)
	return out
}
