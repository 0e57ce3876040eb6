package main

import (
	"testing"

	"github.com/cdevents/sdk-go/pkg/api"
	cdevents04 "github.com/cdevents/sdk-go/pkg/api/v04"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
)

const (
	typeDeployed   = "dev.cdevents.service.deployed.0.3.0"
	typeUpgraded   = "dev.cdevents.service.upgraded.0.3.0"
	typeRolledback = "dev.cdevents.service.rolledback.0.3.0"
	typeRemoved    = "dev.cdevents.service.removed.0.3.0"
	typeStarted    = "dev.cdeventsx.troupe-reconciliation.started.0.1.0"
	typeFinished   = "dev.cdeventsx.troupe-reconciliation.finished.0.1.0"
)

func newEvent(t *testing.T, typ string, r events.Release, data any) event.Event {
	t.Helper()
	e, err := events.NewEvent("troupe/cli", typ, r, data)
	require.NoError(t, err)
	return e
}

func derive(t *testing.T, cause event.Event, source, typ string, data any, revision int) event.Event {
	t.Helper()
	e, err := events.Derive(cause, "troupe/"+source, typ, data)
	require.NoError(t, err)
	events.WithRevision(&e, revision)
	return e
}

// TestTranslate: each troupe event maps to the CDEvents of doc.go's table — the service event
// its facts call for, a reconciliation started or finished with its outcome — each valid by the
// SDK's schemas, about the release in its namespace, chained by the flow's correlation id, with
// an id that is the same when the same event is translated again.
func TestTranslate(t *testing.T) {
	r := events.Release{Namespace: "demo", Name: "hello"}
	chart := &events.ChartInfo{Name: "hello", Version: "0.2.0"}
	req := newEvent(t, events.TypeRequested, r, events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: "charts/hello"}}})
	ready := derive(t, req, "health", events.TypeReady, events.Ready{Objects: 2}, 2)
	rb := newEvent(t, events.TypeRollbackRequested, r, events.RollbackRequested{TargetRevision: 1})
	un := newEvent(t, events.TypeUninstallRequested, r, events.UninstallRequested{})
	uninstalled := derive(t, un, "applier", events.TypeUninstalled,
		events.Uninstalled{Deleted: []events.ObjectRef{{APIVersion: "v1", Kind: "Service", Namespace: "demo", Name: "hello"}}}, 0)
	nothingLeft := derive(t, un, "applier", events.TypeUninstalled, events.Uninstalled{}, 0)
	failed := derive(t, req, "renderer", events.TypeFailed, events.Failed{Stage: events.StageRender, Reason: "template_error", Message: "bad template"}, 2)
	superseded := derive(t, req, "applier", events.TypeSuperseded, events.Superseded{ByRevision: 3, Stage: events.StageApply}, 2)
	diffed := derive(t, req, "applier", events.TypeDiffed, events.Diffed{Bundle: digest(1)}, 2)
	progressing := derive(t, req, "health", events.TypeProgressing, events.Progressing{Total: 1}, 2)

	no, yes := false, true
	cases := []struct {
		name     string
		e        event.Event
		f        facts
		service  bool // service events only
		want     []string
		artifact string // of the service event
		outcome  string // of the finished
		changed  *bool
		reason   string
	}{
		{name: "first install", e: ready, f: facts{Chart: chart}, want: []string{typeDeployed, typeFinished}, artifact: "pkg:generic/hello@0.2.0", outcome: outcomeSuccess},
		{name: "upgrade", e: ready, f: facts{Chart: chart, Live: true}, want: []string{typeUpgraded, typeFinished}, artifact: "pkg:generic/hello@0.2.0", outcome: outcomeSuccess},
		{name: "rollback", e: ready, f: facts{Chart: chart, Live: true, Rollback: true}, want: []string{typeRolledback, typeFinished}, artifact: "pkg:generic/hello@0.2.0", outcome: outcomeSuccess},
		{name: "rollback after an uninstall: deployed again", e: ready, f: facts{Chart: chart, Live: false, Rollback: true}, want: []string{typeDeployed, typeFinished}, artifact: "pkg:generic/hello@0.2.0", outcome: outcomeSuccess},
		{name: "kustomize: the bundle is the artifact", e: ready, f: facts{Bundle: digest(7), Live: true}, want: []string{typeUpgraded, typeFinished},
			artifact: "pkg:generic/hello@sha256:" + digest(7)[len("sha256:"):], outcome: outcomeSuccess},
		{name: "render aged out: the release is the artifact", e: ready, want: []string{typeDeployed, typeFinished}, artifact: "pkg:generic/hello", outcome: outcomeSuccess},
		{name: "service events only", e: ready, f: facts{Chart: chart}, service: true, want: []string{typeDeployed}, artifact: "pkg:generic/hello@0.2.0"},
		{name: "request", e: req, want: []string{typeStarted}},
		{name: "request, service events only", e: req, service: true},
		{name: "rollback request", e: rb, want: []string{typeStarted}},
		{name: "uninstall request", e: un, want: []string{typeStarted}},
		{name: "uninstalled", e: uninstalled, f: facts{Live: true}, want: []string{typeRemoved, typeFinished}, outcome: outcomeSuccess, changed: &yes},
		{name: "uninstalled, service events only", e: uninstalled, f: facts{Live: true}, service: true, want: []string{typeRemoved}},
		{name: "uninstalled, never ready", e: nothingLeft, want: []string{typeFinished}, outcome: outcomeSuccess, changed: &no},
		{name: "failed", e: failed, want: []string{typeFinished}, outcome: outcomeFailure, reason: "render: template_error: bad template"},
		{name: "failed, service events only", e: failed, service: true},
		{name: "superseded", e: superseded, want: []string{typeFinished}, outcome: outcomeCancel, reason: "superseded by revision 3 at apply"},
		{name: "dry run", e: diffed, want: []string{typeFinished}, outcome: outcomeSuccess, changed: &no, reason: "dry run"},
		{name: "progress is no flow's end", e: progressing},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := mapper{spec: specs[Spec05], source: DefaultSource, withReconciliation: !tc.service}
			got, err := m.translate(tc.e, tc.f)
			require.NoError(t, err)
			again, err := m.translate(tc.e, tc.f)
			require.NoError(t, err)
			var types []string
			for i, cd := range got {
				require.NoError(t, validate(cd))
				w := wireOf(t, cd)
				types = append(types, w.Context.Type)
				assert.Equal(t, again[i].GetId(), cd.GetId(), "the same event makes the same id")
				assert.Equal(t, DefaultSource, w.Context.Source)
				assert.Equal(t, events.CorrelationID(tc.e), w.Context.ChainID, "chained by the flow")
				assert.Equal(t, tc.e.ID(), w.CustomData.Event)
				assert.Equal(t, "demo/hello", w.CustomData.Release)
				switch w.Context.Type {
				case typeStarted, typeFinished:
					assert.Equal(t, events.CorrelationID(tc.e), w.Subject.ID, "a reconciliation is a flow")
					assert.Equal(t, events.CorrelationID(tc.e), w.Subject.Content.DesiredState.ID)
					assert.Equal(t, "demo/hello", w.Subject.Content.Target.ID)
					assert.Equal(t, targetType, w.Subject.Content.Target.Type)
					assert.Equal(t, map[string]string{typeStarted: schemaBase + "reconciliation-started.json",
						typeFinished: schemaBase + "reconciliation-finished.json"}[w.Context.Type], w.Context.SchemaURI)
					if w.Context.Type == typeFinished {
						assert.Equal(t, tc.outcome, w.Subject.Content.Outcome)
						assert.Equal(t, tc.changed, w.Subject.Content.Changed)
						assert.Equal(t, tc.reason, w.Subject.Content.Reason)
					}
				default:
					assert.Equal(t, "demo/hello", w.Subject.ID)
					require.NotNil(t, w.Subject.Content.Environment)
					assert.Equal(t, "demo", w.Subject.Content.Environment.ID)
					if w.Context.Type != typeRemoved {
						assert.Equal(t, tc.artifact, w.Subject.Content.ArtifactID)
					}
				}
			}
			assert.Equal(t, tc.want, types)
		})
	}
}

// TestTranslateSpec04: the same mapping in CDEvents v0.4.1, which consumers on an older SDK read
// (Flux's Receiver parses with the SDK's v0.4 package): service events of version 0.2.0, a
// context with version 0.4.1, the reconciliation events valid by our schemas too.
func TestTranslateSpec04(t *testing.T) {
	r := events.Release{Namespace: "demo", Name: "hello"}
	req := newEvent(t, events.TypeRequested, r, events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: "charts/hello"}}})
	ready := derive(t, req, "health", events.TypeReady, events.Ready{Objects: 2}, 1)
	m := mapper{spec: specs[Spec04], source: DefaultSource, withReconciliation: true}
	for _, tc := range []struct {
		name string
		e    event.Event
		f    facts
		want []string
	}{
		{"install", ready, facts{}, []string{"dev.cdevents.service.deployed.0.2.0", typeFinished}},
		{"upgrade", ready, facts{Live: true}, []string{"dev.cdevents.service.upgraded.0.2.0", typeFinished}},
		{"rollback", ready, facts{Live: true, Rollback: true}, []string{"dev.cdevents.service.rolledback.0.2.0", typeFinished}},
		{"request", req, facts{}, []string{typeStarted}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := m.translate(tc.e, tc.f)
			require.NoError(t, err)
			var types []string
			for _, cd := range got {
				b, err := api.AsJsonBytes(cd)
				require.NoError(t, err)
				back, err := cdevents04.NewFromJsonBytes(b)
				require.NoError(t, err)
				require.NoError(t, validate(back))
				w := wireOf(t, back)
				assert.Equal(t, "0.4.1", w.Context.Version)
				types = append(types, w.Context.Type)
			}
			assert.Equal(t, tc.want, types)
		})
	}
}
