package flow

import (
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/historyapi"
)

var web = events.Release{Namespace: "demo", Name: "web"}

// chain builds the events of flows as the services publish them: each derived from the one
// before (or from the event named), with the revision set.
type chain struct {
	t   *testing.T
	all []event.Event
}

func (c *chain) request(data any) event.Event {
	c.t.Helper()
	e, err := events.NewEvent("troupe/cli", events.TypeRequested, web, data)
	require.NoError(c.t, err)
	c.all = append(c.all, e)
	return e
}

// derive is what source publishes of type typ in reaction to cause, for revision (0: cause's).
func (c *chain) derive(cause event.Event, source, typ string, revision int, data any, key ...string) event.Event {
	c.t.Helper()
	e, err := events.Derive(cause, "troupe/"+source, typ, data, key...)
	require.NoError(c.t, err)
	if revision > 0 {
		events.WithRevision(&e, revision)
	}
	c.all = append(c.all, e)
	return e
}

func ref(kind, name string) events.ObjectRef {
	return events.ObjectRef{APIVersion: "v1", Kind: kind, Namespace: "demo", Name: name}
}

var failing = []events.ObjectStatus{
	{ObjectRef: ref("Deployment", "web"), Status: events.StatusFailed, Message: "pod web-1 crash-loops"}, // in the message already
	{ObjectRef: ref("Deployment", "api"), Status: events.StatusFailed, Message: "Back-off pulling image"},
	{ObjectRef: ref("ConfigMap", "config"), Status: events.StatusCurrent},
}

var manifests = events.Requested{Source: events.Source{Manifests: &events.ManifestsSource{Path: "deploy/"}}}

// TestFollowFold: the fold of each kind of flow — what each event says, and how the flow ends.
func TestFollowFold(t *testing.T) {
	tests := []struct {
		name              string
		rollbackOnFailure bool
		flow              func(c *chain) (corr string)
		want              Outcome
		steps             []string // "stage: text"
		last              effect
		succeeded         bool
		summary           string
	}{
		{
			name: "ready",
			flow: func(c *chain) string {
				req := c.request(manifests)
				other := c.request(manifests) // another flow of the release: not this one's
				c.derive(other, "renderer", events.TypeRendered, 9, events.Rendered{Bundle: digest, Objects: []events.ObjectRef{ref("ConfigMap", "x")}})
				r := c.derive(req, "renderer", events.TypeRendered, 1, events.Rendered{Bundle: digest, Size: 10,
					Objects: []events.ObjectRef{ref("ConfigMap", "config"), ref("Deployment", "web")}, Chart: &events.ChartInfo{Name: "hello", Version: "0.1.0"}})
				c.derive(r, "applier", events.TypeHooked, 0, events.Hooked{Phase: events.HookPreInstall, Bundle: digest, Hooks: []events.HookRun{
					{ObjectRef: ref("Job", "db-init"), Result: events.HookSucceeded, Duration: events.Duration(2100 * time.Millisecond)},
					{ObjectRef: ref("ConfigMap", "seed"), Result: events.HookSucceeded, Duration: events.Duration(12 * time.Millisecond), Deleted: true}}})
				a := c.derive(r, "applier", events.TypeApplied, 0, events.Applied{Bundle: digest, ApplyTime: events.Duration(1234 * time.Millisecond),
					Inventory: []events.AppliedObject{{ObjectRef: ref("ConfigMap", "config"), Action: events.ActionCreated}, {ObjectRef: ref("Deployment", "web"), Action: events.ActionConfigured}},
					Pruned:    []events.ObjectRef{ref("Secret", "old")}})
				c.derive(a, "health", events.TypeProgressing, 0, events.Progressing{Ready: 1, Total: 2, Objects: []events.ObjectStatus{
					{ObjectRef: ref("ConfigMap", "config"), Status: events.StatusCurrent},
					{ObjectRef: ref("Deployment", "web"), Status: events.StatusInProgress, Message: "0 of 1 updated replicas are available"}}}, "1")
				c.derive(a, "health", events.TypeProgressing, 0, events.Progressing{Ready: 1, Total: 2}, "2") // same count: said already
				c.derive(a, "health", events.TypeReady, 0, events.Ready{TimeToReady: events.Duration(3 * time.Second), Objects: 2})
				return req.ID()
			},
			want: Outcome{Release: "demo/web", Revision: 1, State: historyapi.StateReady},
			steps: []string{
				"rendered: revision 1: 2 objects from hello-0.1.0",
				"hooked: pre-install: Job/db-init 2.1s, ConfigMap/seed 12ms (deleted)",
				"applied: 2 objects: 1 created, 1 configured, 0 unchanged, 1 pruned (1.234s)",
				"progressing: ready 1/2, waiting for Deployment/web (0 of 1 updated replicas are available)",
				"ready: 2 objects ready, 3s after the request",
			},
			last: ended, succeeded: true,
		},
		{
			name: "failed at health",
			flow: func(c *chain) string {
				req := c.request(manifests)
				r := c.derive(req, "renderer", events.TypeRendered, 2, events.Rendered{Bundle: digest})
				a := c.derive(r, "applier", events.TypeApplied, 0, events.Applied{Bundle: digest})
				c.derive(a, "health", events.TypeFailed, 0, events.Failed{Stage: events.StageHealth, Reason: "crash_loop", Message: "pod web-1 crash-loops", Objects: failing})
				return req.ID()
			},
			want: Outcome{Release: "demo/web", Revision: 2, State: historyapi.StateFailed, Stage: events.StageHealth, Reason: "crash_loop", Message: "pod web-1 crash-loops",
				Objects: failing},
			steps: []string{
				"rendered: revision 2: 0 objects",
				"applied: 0 objects: 0 created, 0 configured, 0 unchanged, 0 pruned (0s)",
				"failed: at health: crash_loop: pod web-1 crash-loops",
				":   Deployment/demo/api: Failed Back-off pulling image",
			},
			last:    ended,
			summary: "demo/web revision 2 failed at health (crash_loop): pod web-1 crash-loops",
		},
		{
			name:              "failed, rolled back on its own",
			rollbackOnFailure: true,
			flow: func(c *chain) string {
				req := c.request(manifests)
				r := c.derive(req, "renderer", events.TypeRendered, 2, events.Rendered{Bundle: digest})
				f := c.derive(r, "applier", events.TypeFailed, 0, events.Failed{Stage: events.StageApply, Reason: "invalid_object", Message: "no"})
				rb := c.derive(f, "history", events.TypeRollbackRequested, 0, events.RollbackRequested{TargetRevision: 1, Automatic: true})
				events.StartFlow(&rb)
				r1 := c.derive(rb, "history", events.TypeRendered, 1, events.Rendered{Bundle: digest, Rollback: true})
				a1 := c.derive(r1, "applier", events.TypeApplied, 0, events.Applied{Bundle: digest})
				c.derive(a1, "health", events.TypeReady, 0, events.Ready{TimeToReady: events.Duration(time.Second), Objects: 1})
				return req.ID()
			},
			// Revision is the one that failed, not the one the rollback restored.
			want: Outcome{Release: "demo/web", Revision: 2, State: historyapi.StateFailed, Stage: events.StageApply, Reason: "invalid_object", Message: "no", RolledBackTo: 1},
			steps: []string{
				"rendered: revision 2: 0 objects",
				"failed: at apply: invalid_object: no",
				"rollback: automatic, to revision 1",
				"rendered: revision 1: 0 objects (the recorded bundle)",
				"applied: 0 objects: 0 created, 0 configured, 0 unchanged, 0 pruned (0s)",
				"rolled back: revision 1 is ready again",
			},
			last:    ended,
			summary: "demo/web revision 2 failed at apply (invalid_object): no; rolled back to revision 1",
		},
		{
			name:              "the rollback fails too",
			rollbackOnFailure: true,
			flow: func(c *chain) string {
				req := c.request(manifests)
				r := c.derive(req, "renderer", events.TypeRendered, 2, events.Rendered{Bundle: digest})
				f := c.derive(r, "applier", events.TypeFailed, 0, events.Failed{Stage: events.StageApply, Reason: "invalid_object", Message: "no"})
				rb := c.derive(f, "history", events.TypeRollbackRequested, 0, events.RollbackRequested{TargetRevision: 1, Automatic: true})
				events.StartFlow(&rb)
				r1 := c.derive(rb, "history", events.TypeRendered, 1, events.Rendered{Bundle: digest, Rollback: true})
				c.derive(r1, "applier", events.TypeFailed, 0, events.Failed{Stage: events.StageApply, Reason: "cluster_unreachable", Message: "no answer"})
				return req.ID()
			},
			want: Outcome{Release: "demo/web", Revision: 2, State: historyapi.StateFailed, Stage: events.StageApply, Reason: "invalid_object",
				Message: "no; the rollback failed too: cluster_unreachable: no answer"},
			steps: []string{
				"rendered: revision 2: 0 objects",
				"failed: at apply: invalid_object: no",
				"rollback: automatic, to revision 1",
				"rendered: revision 1: 0 objects (the recorded bundle)",
				"failed: the rollback failed too: cluster_unreachable: no answer",
			},
			last:    ended,
			summary: "demo/web revision 2 failed at apply (invalid_object): no; the rollback failed too: cluster_unreachable: no answer",
		},
		{
			name:              "failed, awaiting the rollback",
			rollbackOnFailure: true,
			flow: func(c *chain) string {
				req := c.request(manifests)
				c.derive(req, "health", events.TypeFailed, 3, events.Failed{Stage: events.StageHealth, Reason: "timeout", Message: "not ready in 5m"})
				return req.ID()
			},
			want:    Outcome{Release: "demo/web", Revision: 3, State: historyapi.StateFailed, Stage: events.StageHealth, Reason: "timeout", Message: "not ready in 5m"},
			steps:   []string{"failed: at health: timeout: not ready in 5m"},
			last:    rollbackAwaited,
			summary: "demo/web revision 3 failed at health (timeout): not ready in 5m",
		},
		{
			name:              "failed at request: nothing to roll back",
			rollbackOnFailure: true,
			flow: func(c *chain) string {
				req := c.request(manifests)
				c.derive(req, "renderer", events.TypeFailed, 0, events.Failed{Stage: events.StageRequest, Reason: "deadline_exceeded", Message: "too late"})
				return req.ID()
			},
			want:    Outcome{Release: "demo/web", State: historyapi.StateFailed, Stage: events.StageRequest, Reason: "deadline_exceeded", Message: "too late"},
			steps:   []string{"failed: at request: deadline_exceeded: too late"},
			last:    ended,
			summary: "demo/web revision 0 failed at request (deadline_exceeded): too late",
		},
		{
			name: "superseded",
			flow: func(c *chain) string {
				req := c.request(manifests)
				c.derive(req, "renderer", events.TypeSuperseded, 4, events.Superseded{ByRevision: 5, Stage: events.StageRender})
				return req.ID()
			},
			want:    Outcome{Release: "demo/web", State: historyapi.StateSuperseded, Stage: events.StageRender, Message: "superseded at render by revision 5"},
			steps:   []string{"superseded: by revision 5 (at render)"},
			last:    ended,
			summary: "demo/web revision 0 was superseded at render by revision 5",
		},
		{
			name: "dry run",
			flow: func(c *chain) string {
				req := c.request(manifests)
				r := c.derive(req, "renderer", events.TypeRendered, 6, events.Rendered{Bundle: digest})
				c.derive(r, "applier", events.TypeDiffed, 0, events.Diffed{Bundle: digest, Objects: []events.ObjectDiff{{ObjectRef: ref("ConfigMap", "config"), Action: events.ActionUpdate, Diff: "-a\n+b\n"}}})
				return req.ID()
			},
			want: Outcome{Release: "demo/web", Revision: 6, State: historyapi.StateDiffed,
				Diff: []events.ObjectDiff{{ObjectRef: ref("ConfigMap", "config"), Action: events.ActionUpdate, Diff: "-a\n+b\n"}}},
			steps:     []string{"rendered: revision 6: 0 objects", "diffed: dry run: nothing was changed"},
			last:      ended,
			succeeded: true,
		},
		{
			name: "uninstalled",
			flow: func(c *chain) string {
				u, err := events.NewEvent("troupe/cli", events.TypeUninstallRequested, web, events.UninstallRequested{})
				require.NoError(c.t, err)
				c.all = append(c.all, u)
				c.derive(u, "applier", events.TypeUninstalled, 0, events.Uninstalled{Deleted: []events.ObjectRef{ref("ConfigMap", "config")}})
				return u.ID()
			},
			want:      Outcome{Release: "demo/web", State: historyapi.StateUninstalled},
			steps:     []string{"uninstalled: 1 objects deleted, 0 kept"},
			last:      ended,
			succeeded: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &chain{t: t}
			corr := tc.flow(c)
			var steps []string
			f := &follower{out: Outcome{Release: web.String()}, corr: corr, rollbackOnFailure: tc.rollbackOnFailure, ready: -1,
				report: func(s Step) { steps = append(steps, s.Stage+": "+s.Text) }}
			last := ignored
			for i, e := range c.all {
				last = f.fold(e)
				if last == ended {
					require.Equal(t, len(c.all)-1, i, "the flow ends with its last event")
				}
			}
			assert.Equal(t, tc.last, last)
			assert.Equal(t, tc.want, f.out)
			assert.Equal(t, tc.steps, steps)
			assert.Equal(t, tc.succeeded, f.out.Succeeded())
			if !tc.succeeded {
				assert.Equal(t, tc.summary, f.out.Summary())
			}
		})
	}
}

const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// TestWaitsFor: after each step of a flow, what comes next and who publishes it — the service
// the catalog's PublishedBy names for that type.
func TestWaitsFor(t *testing.T) {
	tests := []struct {
		last, next, service string
		publishedAs         string // the type whose PublishedBy names the service
	}{
		{"", events.TypeRendered, "renderer", events.TypeRendered},
		{events.TypeRequested, events.TypeRendered, "renderer", events.TypeRendered},
		{events.TypeRollbackRequested, events.TypeRendered, "history service", events.TypeRendered},
		{events.TypeRendered, events.TypeApplied, "applier", events.TypeApplied},
		{events.TypeHooked, events.TypeApplied, "applier", events.TypeApplied},
		{events.TypeSettled, events.TypeHooked, "applier", events.TypeHooked},
		{events.TypeUninstallRequested, events.TypeUninstalled, "applier", events.TypeUninstalled},
		{events.TypeApplied, events.TypeProgressing, "health watcher", events.TypeProgressing},
		{events.TypeProgressing, "release.ready or release.failed", "health watcher", events.TypeReady},
		{events.TypeReady, "", "", ""},
		{events.TypeFailed, "", "", ""},
		{events.TypeDegraded, "", "", ""},
	}
	for _, tc := range tests {
		t.Run(cmpOr(tc.last, "request"), func(t *testing.T) {
			next, service := WaitsFor(tc.last)
			assert.Equal(t, tc.next, next)
			assert.Equal(t, tc.service, service)
			if tc.publishedAs != "" {
				spec, ok := events.Lookup(tc.publishedAs)
				require.True(t, ok)
				who, _, _ := strings.Cut(service, " ")
				assert.Contains(t, spec.PublishedBy, who, "the catalog says who publishes %s", tc.publishedAs)
			}
		})
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// TestNobodyAnswers: a quiet flow names the service it waits for, unless that is the health
// watcher waiting on the cluster, or the flow is past its last step.
func TestNobodyAnswers(t *testing.T) {
	assert.Equal(t, "no release.rendered after the request for 300ms: is the renderer running (or busy)? ('troupe graph' lists the services that answer)",
		nobodyAnswers("", 300*time.Millisecond))
	assert.Contains(t, nobodyAnswers(events.TypeRendered, time.Second), "no release.applied after release.rendered for 1s: is the applier running (or busy)?")
	assert.Contains(t, nobodyAnswers(events.TypeApplied, time.Second), "is the health watcher running")
	assert.Empty(t, nobodyAnswers(events.TypeProgressing, time.Second), "the cluster may take its time")
	assert.Empty(t, nobodyAnswers(events.TypeReady, time.Second))
}

// TestWaitingFor names the first two objects not Current, and how many more.
func TestWaitingFor(t *testing.T) {
	st := func(name, status, msg string) events.ObjectStatus {
		return events.ObjectStatus{ObjectRef: ref("Deployment", name), Status: status, Message: msg}
	}
	tests := []struct {
		name string
		objs []events.ObjectStatus
		want string
	}{
		{"all current", []events.ObjectStatus{st("a", events.StatusCurrent, "")}, ""},
		{"one", []events.ObjectStatus{st("a", events.StatusCurrent, ""), st("b", events.StatusInProgress, "")}, ", waiting for Deployment/b"},
		{"long message", []events.ObjectStatus{st("b", events.StatusInProgress, strings.Repeat("x", 200))}, ", waiting for Deployment/b (" + events.Truncate(strings.Repeat("x", 200), 160) + ")"},
		{"more", []events.ObjectStatus{st("a", events.StatusInProgress, ""), st("b", events.StatusNotFound, ""), st("c", events.StatusUnknown, ""), st("d", events.StatusTerminating, "")},
			", waiting for Deployment/a, Deployment/b, 2 more"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, waitingFor(tc.objs))
		})
	}
}
