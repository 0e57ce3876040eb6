package renderer_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/natstest"
	"github.com/troupe-dev/troupe/services/renderer"
	sharedfixtures "github.com/troupe-dev/troupe/services/renderer/internal/fixtures"
	"github.com/troupe-dev/troupe/services/renderer/render"
)

func fixtures(t *testing.T) string { return sharedfixtures.Dir(t) }

// startRenderer runs the service on an embedded NATS and returns JetStream.
func startRenderer(t *testing.T) jetstream.JetStream {
	t.Helper()
	_, _, js := natstest.Start(t)
	svc, err := renderer.New(t.Context(), js, renderer.Options{Render: render.Options{SourceRoots: []string{fixtures(t), os.TempDir()}}})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- svc.Start(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-svc.Ready():
	case err := <-done:
		t.Fatal(err)
	}
	return js
}

func request(t *testing.T, js jetstream.JetStream, rel events.Release, req events.Requested) event.Event {
	t.Helper()
	e, err := events.NewEvent("troupe/test", events.TypeRequested, rel, req)
	require.NoError(t, err)
	_, err = events.NewPublisher(js, events.Names{}).Publish(t.Context(), e)
	require.NoError(t, err)
	return e
}

// outcome waits for the renderer's terminal answer to the request with correlation id corr.
func outcome(t *testing.T, js jetstream.JetStream, rel events.Release, corr string) event.Event {
	t.Helper()
	f, err := events.Names{}.ReleaseFilter(rel)
	require.NoError(t, err)
	c, err := js.OrderedConsumer(t.Context(), events.StreamName, jetstream.OrderedConsumerConfig{FilterSubjects: []string{f}})
	require.NoError(t, err)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		msg, err := c.Next(jetstream.FetchMaxWait(time.Second))
		if err != nil {
			continue
		}
		e, err := events.Names{}.Decode(msg.Subject(), msg.Headers(), msg.Data())
		require.NoError(t, err)
		if e.Source() == "troupe/renderer" && events.CorrelationID(e) == corr {
			return e
		}
	}
	t.Fatalf("no answer from the renderer to %s", corr)
	return event.Event{}
}

func TestRendersPodinfoIntoTheObjectStore(t *testing.T) {
	js := startRenderer(t)
	rel := events.Release{Namespace: "prod", Name: "podinfo"}
	chart := filepath.Join(fixtures(t), "podinfo/charts/podinfo")
	req := request(t, js, rel, events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: chart}},
		Options: events.Options{Timeout: events.Duration(2 * time.Minute)}})

	got := outcome(t, js, rel, req.ID())
	require.Equal(t, events.TypeRendered, got.Type(), string(got.Data()))
	assert.Equal(t, 1, events.Revision(got))
	assert.Equal(t, req.ID(), events.CausationID(got))
	r, err := events.Data[events.Rendered](got)
	require.NoError(t, err)
	assert.Equal(t, "podinfo", r.Chart.Name)
	assert.NotEmpty(t, r.Objects)
	assert.Equal(t, events.Duration(2*time.Minute), r.Options.Timeout, "options ride along to the next stages")

	objs, err := events.OpenObjects(t.Context(), js, events.BucketBundles)
	require.NoError(t, err)
	rc, err := objs.Get(t.Context(), r.Bundle)
	require.NoError(t, err)
	data, err := io.ReadAll(rc)
	require.NoError(t, err)
	assert.EqualValues(t, r.Size, len(data))
	b, err := events.ReadBundle(data)
	require.NoError(t, err)
	assert.Len(t, b.Objects, len(r.Objects))

	// A second request with the same inputs is revision 2 and reuses the same bundle.
	req2 := request(t, js, rel, events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: chart}},
		Options: events.Options{Timeout: events.Duration(2 * time.Minute)}})
	got2 := outcome(t, js, rel, req2.ID())
	require.Equal(t, events.TypeRendered, got2.Type())
	assert.Equal(t, 2, events.Revision(got2))
	r2, err := events.Data[events.Rendered](got2)
	require.NoError(t, err)
	assert.Equal(t, r.Bundle, r2.Bundle)
}

func TestRenderFailureIsReportedAndNothingRendered(t *testing.T) {
	js := startRenderer(t)
	rel := events.Release{Namespace: "prod", Name: "broken"}
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "Chart.yaml"), []byte("apiVersion: v2\nname: broken\nversion: 0.1.0\n"), 0o644))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "templates"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "templates", "cm.yaml"), []byte("{{ fail \"no database configured\" }}\n"), 0o644))

	// Publishes counted on the wire: the stream's duplicate window would hide a second one.
	var published atomic.Int32
	sub, err := js.Conn().Subscribe("troupe.release.prod.broken.failed", func(*nats.Msg) { published.Add(1) })
	require.NoError(t, err)
	defer sub.Unsubscribe()

	req := request(t, js, rel, events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: dir}}})
	got := outcome(t, js, rel, req.ID())
	require.Equal(t, events.TypeFailed, got.Type())
	f, err := events.Data[events.Failed](got)
	require.NoError(t, err)
	assert.Equal(t, events.StageRender, f.Stage)
	assert.Equal(t, render.ReasonTemplateError, f.Reason)
	assert.Contains(t, f.Message, "templates/cm.yaml:1")
	assert.Contains(t, f.Message, "no database configured")
	assert.Equal(t, 1, events.Revision(got))

	time.Sleep(300 * time.Millisecond)
	for _, e := range eventsOf(t, js, rel) {
		assert.NotEqual(t, events.TypeRendered, e.Type(), "nothing rendered")
	}
	failed := 0
	for _, e := range eventsOf(t, js, rel) {
		if e.Type() == events.TypeFailed {
			failed++
		}
	}
	assert.Equal(t, 1, failed, "one release.failed, however many parts of the renderer saw the failure")
	assert.EqualValues(t, 1, published.Load(), "release.failed published once, by the subscriber")
}

func TestStaleRequestIsSuperseded(t *testing.T) {
	_, _, js := natstest.Start(t)
	rel := events.Release{Namespace: "prod", Name: "web"}
	chart := filepath.Join(fixtures(t), "podinfo/charts/podinfo")
	runRenderer(t, js)() // the renderer's consumer exists, and the renderer is down
	// Two requests land while it is down: the older must not be rendered.
	old := request(t, js, rel, events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: chart}}})
	newer := request(t, js, rel, events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: chart}}, Set: []string{"replicaCount=3"}})
	defer runRenderer(t, js)()

	got := outcome(t, js, rel, old.ID())
	require.Equal(t, events.TypeSuperseded, got.Type())
	s, err := events.Data[events.Superseded](got)
	require.NoError(t, err)
	assert.Equal(t, 2, s.ByRevision)
	assert.Equal(t, events.StageRender, s.Stage)
	assert.Equal(t, 1, events.Revision(got))
	got = outcome(t, js, rel, newer.ID())
	assert.Equal(t, events.TypeRendered, got.Type())
	assert.Equal(t, 2, events.Revision(got))
}

func TestRendersUploadedKustomization(t *testing.T) {
	js := startRenderer(t)
	rel := events.Release{Namespace: "staging", Name: "podinfo"}
	deploy := filepath.Join(fixtures(t), "podinfo/deploy")
	archive := sharedfixtures.TarGz(t, deploy, deploy)
	sources, err := events.OpenObjects(t.Context(), js, events.BucketSources)
	require.NoError(t, err)
	digest, _, err := sources.Put(t.Context(), bytes.NewReader(archive))
	require.NoError(t, err)

	req := request(t, js, rel, events.Requested{Source: events.Source{Kustomize: &events.KustomizeSource{Object: digest, Dir: "overlays/staging"}}})
	got := outcome(t, js, rel, req.ID())
	require.Equal(t, events.TypeRendered, got.Type(), string(got.Data()))
	r, err := events.Data[events.Rendered](got)
	require.NoError(t, err)

	direct, err := render.New(render.Options{SourceRoots: []string{fixtures(t)}})
	require.NoError(t, err)
	want, err := direct.Render(t.Context(), render.Input{Release: rel, Revision: 1, Request: events.Requested{
		Source: events.Source{Kustomize: &events.KustomizeSource{Path: filepath.Join(fixtures(t), "podinfo/deploy/overlays/staging")}}}})
	require.NoError(t, err)
	assert.Equal(t, want.Objects, r.Objects, "the uploaded archive renders as the directory does")
	assert.Equal(t, events.Digest(want.Bundle), r.Bundle)
}

func eventsOf(t *testing.T, js jetstream.JetStream, rel events.Release) []event.Event {
	t.Helper()
	f, err := events.Names{}.ReleaseFilter(rel)
	require.NoError(t, err)
	c, err := js.OrderedConsumer(t.Context(), events.StreamName, jetstream.OrderedConsumerConfig{FilterSubjects: []string{f}})
	require.NoError(t, err)
	var out []event.Event
	for {
		msg, err := c.Next(jetstream.FetchMaxWait(500 * time.Millisecond))
		if err != nil {
			return out
		}
		e, err := events.Names{}.Decode(msg.Subject(), msg.Headers(), msg.Data())
		require.NoError(t, err)
		out = append(out, e)
	}
}

// TestDryRunNeverSupersedesARealRequest: a real request, then at once a dry run of the same
// release (CI previewing after a release): the real one is rendered, not superseded, and so is
// the dry run. Two dry runs in a row: the older is superseded by the newer.
func TestDryRunNeverSupersedesARealRequest(t *testing.T) {
	_, _, js := natstest.Start(t)
	rel := events.Release{Namespace: "prod", Name: "web"}
	chart := filepath.Join(fixtures(t), "podinfo/charts/podinfo")
	runRenderer(t, js)() // the renderer's consumer exists, and the renderer is down
	src := events.Source{Helm: &events.HelmSource{Path: chart}}
	dry := events.Options{DryRun: true}
	real := request(t, js, rel, events.Requested{Source: src})
	dry1 := request(t, js, rel, events.Requested{Source: src, Options: dry})
	dry2 := request(t, js, rel, events.Requested{Source: src, Options: dry, Set: []string{"replicaCount=3"}})
	defer runRenderer(t, js)()

	got := outcome(t, js, rel, real.ID())
	require.Equal(t, events.TypeRendered, got.Type(), string(got.Data()))
	assert.Equal(t, 1, events.Revision(got))
	got = outcome(t, js, rel, dry1.ID())
	require.Equal(t, events.TypeSuperseded, got.Type(), string(got.Data()))
	s, err := events.Data[events.Superseded](got)
	require.NoError(t, err)
	assert.Equal(t, 3, s.ByRevision)
	got = outcome(t, js, rel, dry2.ID())
	assert.Equal(t, events.TypeRendered, got.Type(), string(got.Data()))
}

// runRenderer starts a renderer on js and waits until it is ready; stop stops it and waits until
// it returned.
func runRenderer(t *testing.T, js jetstream.JetStream) (stop func()) {
	t.Helper()
	svc, err := renderer.New(t.Context(), js, renderer.Options{Render: render.Options{SourceRoots: []string{fixtures(t), os.TempDir()}}})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- svc.Start(ctx) }()
	<-svc.Ready()
	return func() { cancel(); <-done }
}

// TestRenderedNamesTheGates: release.rendered names the gates the revision must pass — the
// request's and the namespace's policy's, sorted, each once — and only the namespace's own.
func TestRenderedNamesTheGates(t *testing.T) {
	js := startRenderer(t)
	policy, err := events.OpenGatePolicy(t.Context(), js, events.Names{})
	require.NoError(t, err)
	require.NoError(t, policy.Require(t.Context(), "prod", events.GateRule{Gate: "security"}))
	require.NoError(t, policy.Require(t.Context(), "prod", events.GateRule{Gate: "approval"}))
	require.NoError(t, policy.Require(t.Context(), "staging", events.GateRule{Gate: "other"}))
	src := events.Source{Manifests: &events.ManifestsSource{YAML: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n"}}
	for ns, want := range map[string][]string{"prod": {"approval", "policy", "security"}, "dev": {"approval", "policy"}} {
		rel := events.Release{Namespace: ns, Name: "app"}
		req := request(t, js, rel, events.Requested{Source: src, Options: events.Options{Gates: []string{"policy", "approval"}}})
		got := outcome(t, js, rel, req.ID())
		require.Equal(t, events.TypeRendered, got.Type(), string(got.Data()))
		r, err := events.Data[events.Rendered](got)
		require.NoError(t, err)
		assert.Equal(t, want, r.Gates, ns)
	}
}
