package flow

import (
	"fmt"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
)

// streamed numbers c's events as the stream would, one second apart, the requests carrying the
// revisions the services give them.
func (c *chain) streamed(revisions ...int) []Streamed {
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	out := make([]Streamed, len(c.all))
	n := 0
	for i, e := range c.all {
		e.SetTime(base.Add(time.Duration(i) * time.Second))
		if e.Type() == events.TypeRequested {
			events.WithRevision(&e, revisions[n])
			n++
		}
		out[i] = Streamed{Seq: uint64(10 + i), Event: e}
	}
	return out
}

// TestNewTrace: a revision's trace holds the events of its flows (its request's, and the
// rollback's that restored it), each stage's time from the end of the one before, and how it
// ended — where it first stopped, even when a rollback followed.
func TestNewTrace(t *testing.T) {
	type row struct{ typ, source, offset, detail string }
	tests := []struct {
		name     string
		flows    func(c *chain) []Streamed
		revision int
		want     []row
		stages   []string // "stage from→to took"
		ended    string
		stopped  string
		wantErr  string
	}{
		{
			name: "ready",
			flows: func(c *chain) []Streamed {
				req := c.request(events.Requested{Source: events.Source{Helm: &events.HelmSource{Object: digest}}})
				r := c.derive(req, "renderer", events.TypeRendered, 1, events.Rendered{Bundle: digest, Objects: []events.ObjectRef{ref("ConfigMap", "config")}})
				a := c.derive(r, "applier", events.TypeApplied, 0, events.Applied{Bundle: digest, Inventory: []events.AppliedObject{{ObjectRef: ref("ConfigMap", "config"), Action: events.ActionCreated}}})
				c.derive(a, "health", events.TypeProgressing, 0, events.Progressing{Ready: 0, Total: 1})
				c.derive(a, "health", events.TypeReady, 0, events.Ready{TimeToReady: events.Duration(4 * time.Second), Objects: 1})
				return c.streamed(1)
			},
			want: []row{
				{events.TypeRequested, "troupe/cli", "0s", "helm upload sha256:0123456789ab"},
				{events.TypeRendered, "troupe/renderer", "1s", "1 objects"},
				{events.TypeApplied, "troupe/applier", "2s", "1 objects, 0 pruned"},
				{events.TypeProgressing, "troupe/health", "3s", "ready 0/1"},
				{events.TypeReady, "troupe/health", "4s", "1 objects, 4s after the request"},
			},
			stages: []string{"render requested→rendered 1s", "apply rendered→applied 1s", "health applied→ready 2s"},
			ended:  "ready",
		},
		{
			name: "hooks",
			flows: func(c *chain) []Streamed {
				req := c.request(manifests)
				r := c.derive(req, "renderer", events.TypeRendered, 1, events.Rendered{Bundle: digest})
				h := c.derive(r, "applier", events.TypeHooked, 0, events.Hooked{Phase: events.HookPreUpgrade, Bundle: digest,
					Hooks: []events.HookRun{{ObjectRef: ref("Job", "migrate"), Result: events.HookSucceeded, Duration: events.Duration(time.Second)}}})
				c.derive(h, "applier", events.TypeFailed, 0, events.Failed{Stage: events.StageHook, Reason: "hook_failed", Message: "hook seed: the job failed"})
				return c.streamed(1)
			},
			want: []row{
				{events.TypeRequested, "troupe/cli", "0s", "manifests deploy/"},
				{events.TypeRendered, "troupe/renderer", "1s", "0 objects"},
				{events.TypeHooked, "troupe/applier", "2s", "pre-upgrade: Job/migrate 1s"},
				{events.TypeFailed, "troupe/applier", "3s", "at hook: hook_failed: hook seed: the job failed"},
			},
			stages:  []string{"render requested→rendered 1s", "hook rendered→hooked 1s", "stopped hooked→failed 1s"},
			ended:   "failed",
			stopped: "failed at hook: hook_failed: hook seed: the job failed",
		},
		{
			name: "failed, then rolled back: the latest revision by default",
			flows: func(c *chain) []Streamed {
				req1 := c.request(manifests)
				r1 := c.derive(req1, "renderer", events.TypeRendered, 1, events.Rendered{Bundle: digest})
				c.derive(r1, "applier", events.TypeApplied, 0, events.Applied{Bundle: digest})
				req2 := c.request(manifests)
				r2 := c.derive(req2, "renderer", events.TypeRendered, 2, events.Rendered{Bundle: digest})
				a2 := c.derive(r2, "applier", events.TypeApplied, 0, events.Applied{Bundle: digest})
				f := c.derive(a2, "health", events.TypeFailed, 0, events.Failed{Stage: events.StageHealth, Reason: "crash_loop", Message: "pod web-1 crash-loops\nand more"})
				rb := c.derive(f, "history", events.TypeRollbackRequested, 0, events.RollbackRequested{TargetRevision: 1, Automatic: true})
				events.StartFlow(&rb)
				c.all[len(c.all)-1] = rb
				rr := c.derive(rb, "history", events.TypeRendered, 1, events.Rendered{Bundle: digest, Rollback: true})
				ra := c.derive(rr, "applier", events.TypeApplied, 0, events.Applied{Bundle: digest})
				c.derive(ra, "health", events.TypeReady, 0, events.Ready{TimeToReady: events.Duration(time.Second), Objects: 0})
				return c.streamed(1, 2)
			},
			want: []row{
				{events.TypeRequested, "troupe/cli", "0s", "manifests deploy/"},
				{events.TypeRendered, "troupe/renderer", "1s", "0 objects"},
				{events.TypeApplied, "troupe/applier", "2s", "0 objects, 0 pruned"},
				{events.TypeFailed, "troupe/health", "3s", "at health: crash_loop: pod web-1 crash-loops"},
				{events.TypeRollbackRequested, "troupe/history", "4s", "to revision 1 (automatic)"},
				{events.TypeRendered, "troupe/history", "5s", "0 objects, recorded bundle"},
				{events.TypeApplied, "troupe/applier", "6s", "0 objects, 0 pruned"},
				{events.TypeReady, "troupe/health", "7s", "0 objects, 1s after the request"},
			},
			stages: []string{"render requested→rendered 1s", "apply rendered→applied 1s", "stopped applied→failed 1s",
				"rollback failed→rendered 2s", "apply rendered→applied 1s", "health applied→ready 1s"},
			ended:   "ready",
			stopped: "failed at health: crash_loop: pod web-1 crash-loops",
		},
		{
			name: "an earlier revision, still going",
			flows: func(c *chain) []Streamed {
				req1 := c.request(manifests)
				c.derive(req1, "renderer", events.TypeRendered, 1, events.Rendered{Bundle: digest})
				req2 := c.request(manifests)
				c.derive(req2, "renderer", events.TypeSuperseded, 2, events.Superseded{ByRevision: 3, Stage: events.StageRender})
				c.request(manifests)
				return c.streamed(1, 2, 3)
			},
			revision: 1,
			want: []row{
				{events.TypeRequested, "troupe/cli", "0s", "manifests deploy/"},
				{events.TypeRendered, "troupe/renderer", "1s", "0 objects"},
			},
			stages: []string{"render requested→rendered 1s"},
		},
		{
			name: "superseded",
			flows: func(c *chain) []Streamed {
				req := c.request(manifests)
				c.derive(req, "renderer", events.TypeSuperseded, 1, events.Superseded{ByRevision: 2, Stage: events.StageRender})
				return c.streamed(1)
			},
			want: []row{
				{events.TypeRequested, "troupe/cli", "0s", "manifests deploy/"},
				{events.TypeSuperseded, "troupe/renderer", "1s", "at render by revision 2"},
			},
			stages:  []string{"stopped requested→superseded 1s"},
			ended:   "superseded",
			stopped: "superseded at render by revision 2",
		},
		{
			name: "no such revision",
			flows: func(c *chain) []Streamed {
				c.request(manifests)
				return c.streamed(1)
			},
			revision: 2,
			wantErr:  "demo/web has no revision 2 (the latest is 1)",
		},
		{
			name:    "no request",
			flows:   func(c *chain) []Streamed { return nil },
			wantErr: "demo/web: no release.requested in the stream",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := NewTrace(web, tc.revision, tc.flows(&chain{t: t}))
			if tc.wantErr != "" {
				assert.EqualError(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			var got []row
			for _, e := range tr.Events {
				got = append(got, row{e.Type, e.Source, e.Offset, e.Detail})
			}
			assert.Equal(t, tc.want, got)
			var stages []string
			for _, s := range tr.Stages {
				stages = append(stages, fmt.Sprintf("%s %s→%s %s", s.Stage, s.From, s.To, s.Duration))
			}
			assert.Equal(t, tc.stages, stages)
			assert.Equal(t, tc.ended, tr.Ended)
			assert.Equal(t, tc.stopped, tr.Stopped)
			assert.Equal(t, "demo/web", tr.Release)
		})
	}
}

// TestDetail: what a trace says of the events the table above does not show.
func TestDetail(t *testing.T) {
	c := &chain{t: t}
	req := c.request(manifests)
	rb, err := events.NewEvent("troupe/cli", events.TypeRollbackRequested, web, events.RollbackRequested{})
	require.NoError(t, err)
	for _, tc := range []struct {
		e    event.Event
		want string
	}{
		{rb, "to the previous ready revision"},
		{c.derive(req, "health", events.TypeDegraded, 1, events.Degraded{Objects: failing}), "3 objects"},
		{c.derive(req, "applier", events.TypeUninstalled, 1, events.Uninstalled{}), ""},
	} {
		assert.Equal(t, tc.want, detail(tc.e), tc.e.Type())
	}
}

// TestTraceObjects: a trace holds the revision's objects as applied, each with the last status
// the health watcher reported, all Current once the revision is ready; each event names the
// service (lane) that published it.
func TestTraceObjects(t *testing.T) {
	cm, dep := ref("ConfigMap", "config"), ref("Deployment", "web")
	inventory := []events.AppliedObject{{ObjectRef: cm, Action: events.ActionCreated}, {ObjectRef: dep, Action: events.ActionCreated}}
	status := func(r events.ObjectRef, s, msg string) events.ObjectStatus {
		return events.ObjectStatus{ObjectRef: r, Status: s, Message: msg}
	}

	c := &chain{t: t}
	req := c.request(manifests)
	r := c.derive(req, "renderer", events.TypeRendered, 1, events.Rendered{Bundle: digest})
	a := c.derive(r, "applier", events.TypeApplied, 0, events.Applied{Bundle: digest, Inventory: inventory})
	c.derive(a, "health", events.TypeProgressing, 0, events.Progressing{Objects: []events.ObjectStatus{status(dep, events.StatusInProgress, "1 of 2 replicas")}, Ready: 1, Total: 2})
	c.derive(a, "health", events.TypeFailed, 0, events.Failed{Stage: events.StageHealth, Reason: "timeout", Message: "not ready",
		Objects: []events.ObjectStatus{status(dep, "Failed", "ImagePullBackOff")}})
	tr, err := NewTrace(web, 0, c.streamed(1))
	require.NoError(t, err)
	assert.Equal(t, []events.ObjectStatus{status(cm, "Unknown", ""), status(dep, "Failed", "ImagePullBackOff")}, tr.Objects)
	var lanes []string
	for _, e := range tr.Events {
		lanes = append(lanes, e.Service)
	}
	assert.Equal(t, []string{"cli", "renderer", "applier", "health", "health"}, lanes)

	c = &chain{t: t}
	req = c.request(manifests)
	r = c.derive(req, "renderer", events.TypeRendered, 1, events.Rendered{Bundle: digest})
	a = c.derive(r, "applier", events.TypeApplied, 0, events.Applied{Bundle: digest, Inventory: inventory})
	c.derive(a, "health", events.TypeProgressing, 0, events.Progressing{Objects: []events.ObjectStatus{status(dep, events.StatusInProgress, "1 of 2 replicas")}, Ready: 1, Total: 2})
	c.derive(a, "health", events.TypeReady, 0, events.Ready{Objects: 2})
	tr, err = NewTrace(web, 0, c.streamed(1))
	require.NoError(t, err)
	assert.Equal(t, []events.ObjectStatus{status(cm, "Current", ""), status(dep, "Current", "")}, tr.Objects)
}
