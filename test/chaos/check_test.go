package chaos

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
)

// run builds hand-made event lists: every event gets the next stream sequence and a time one
// second after the last.
type run struct {
	t0  time.Time
	seq uint64
	evs []Event
}

func newRun() *run { return &run{t0: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)} }

func (r *run) add(e Event) Event {
	r.seq++
	e.Seq = r.seq
	if e.Time.IsZero() {
		e.Time = r.t0.Add(time.Duration(r.seq) * time.Second)
	}
	if e.Release == "" {
		e.Release = "chaos/r1"
	}
	if e.ID == "" {
		e.ID = e.Type + "-" + e.Correlation
	}
	r.evs = append(r.evs, e)
	return e
}

// request adds a release.requested of gen (with its objects) and returns its flow id.
func (r *run) request(id, gen string) string {
	r.add(Event{Type: events.TypeRequested, ID: id, Correlation: id, Timeout: time.Minute, Want: want("r1", gen)})
	return id
}

// through adds the rendered and applied events of a flow and its terminal event typ.
func (r *run) through(flow string, rev int, typ string) Event {
	r.add(Event{Type: events.TypeRendered, Correlation: flow, Revision: rev})
	r.add(Event{Type: events.TypeApplied, Correlation: flow, Revision: rev})
	return r.add(Event{Type: typ, Correlation: flow, Revision: rev})
}

func want(name, gen string) State {
	return State{"ConfigMap/" + name + "-gen": gen, "Deployment/" + name: gen}
}

func objects(rel string, s State) []Object {
	var out []Object
	for k, g := range s {
		out = append(out, Object{Release: rel, Key: k, Gen: g})
	}
	return out
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name  string
		build func(r *run) Input
		check func(t *testing.T, rep Report)
	}{{
		name: "clean: install, upgrade, rollback, all ready, the cluster at the rollback's target",
		build: func(r *run) Input {
			a := r.request("a", "g1")
			r.through(a, 1, events.TypeReady)
			b := r.request("b", "g2")
			r.through(b, 2, events.TypeReady)
			r.add(Event{Type: events.TypeRollbackRequested, ID: "c", Correlation: "c", Target: 1, Timeout: time.Minute})
			r.through("c", 1, events.TypeReady)
			return Input{Objects: objects("chaos/r1", want("r1", "g1"))}
		},
		check: func(t *testing.T, rep Report) {
			assert.False(t, rep.Failed(), "%+v", rep)
			assert.Equal(t, 1, rep.Releases)
			assert.Equal(t, 2, rep.Revisions)
			assert.Equal(t, 3, rep.Flows)
			assert.Equal(t, 3*time.Second, rep.P50)
			assert.Equal(t, map[string]int{events.TypeReady: 3}, rep.Ends)
			assert.Equal(t, 2, rep.Objects)
		},
	}, {
		name: "the slowest flows name their longest wait",
		build: func(r *run) Input {
			a := r.request("a", "g1")
			r.add(Event{Type: events.TypeRendered, Correlation: a, Revision: 1})
			r.add(Event{Type: events.TypeApplied, Correlation: a, Revision: 1, Time: r.t0.Add(40 * time.Second)})
			r.add(Event{Type: events.TypeReady, Correlation: a, Revision: 1, Time: r.t0.Add(41 * time.Second)})
			b := r.request("b", "g2")
			r.through(b, 2, events.TypeReady)
			return Input{Objects: objects("chaos/r1", want("r1", "g2"))}
		},
		check: func(t *testing.T, rep Report) {
			assert.False(t, rep.Failed(), "%+v", rep)
			require.Len(t, rep.Slowest, 2)
			assert.Equal(t, "a", rep.Slowest[0].Flow)
			assert.Equal(t, "release.ready after 40s; longest wait 38s, from release.rendered to release.applied", rep.Slowest[0].What)
			assert.Equal(t, "b", rep.Slowest[1].Flow)
		},
	}, {
		name: "a duplicated terminal: the same event id stored twice counts twice",
		build: func(r *run) Input {
			a := r.request("a", "g1")
			ready := r.through(a, 1, events.TypeReady)
			r.add(ready) // a re-publish after the duplicate window
			return Input{Objects: objects("chaos/r1", want("r1", "g1"))}
		},
		check: func(t *testing.T, rep Report) {
			require.Len(t, rep.Duplicated, 1)
			assert.Contains(t, rep.Duplicated[0].What, "2 terminal messages")
			assert.Equal(t, 1, rep.Duplicated[0].Revision)
			assert.True(t, rep.Failed())
		},
	}, {
		name: "two different terminals of one flow",
		build: func(r *run) Input {
			a := r.request("a", "g1")
			r.through(a, 1, events.TypeReady)
			r.add(Event{Type: events.TypeFailed, Correlation: a, Revision: 1, Stage: "health", Reason: "deadline_exceeded"})
			return Input{Objects: objects("chaos/r1", want("r1", "g1"))}
		},
		check: func(t *testing.T, rep Report) {
			require.Len(t, rep.Duplicated, 1)
			assert.Contains(t, rep.Duplicated[0].What, "release.ready")
			assert.Contains(t, rep.Duplicated[0].What, "release.failed")
		},
	}, {
		name: "a missing terminal: the flow is lost, naming the last stage reached",
		build: func(r *run) Input {
			a := r.request("a", "g1")
			r.through(a, 1, events.TypeReady)
			b := r.request("b", "g2")
			r.add(Event{Type: events.TypeRendered, Correlation: b, Revision: 2})
			return Input{Objects: objects("chaos/r1", want("r1", "g1")), Now: r.t0.Add(time.Hour)}
		},
		check: func(t *testing.T, rep Report) {
			require.Len(t, rep.Lost, 1)
			assert.Equal(t, 2, rep.Lost[0].Revision)
			assert.Contains(t, rep.Lost[0].What, "last release.rendered")
			assert.Contains(t, rep.Lost[0].What, "passed")
			assert.Empty(t, rep.Wrong, "an unfinished revision may leave the cluster at the last ready one")
		},
	}, {
		name: "a request nobody answered",
		build: func(r *run) Input {
			r.request("a", "g1")
			return Input{Now: r.t0.Add(time.Hour)}
		},
		check: func(t *testing.T, rep Report) {
			require.Len(t, rep.Lost, 1)
			assert.Contains(t, rep.Lost[0].What, "no service answered")
		},
	}, {
		name: "a stuck flow: its terminal came after deadline + grace",
		build: func(r *run) Input {
			a := r.request("a", "g1")
			r.add(Event{Type: events.TypeFailed, Correlation: a, Revision: 1, Time: r.t0.Add(10 * time.Minute), Stage: "apply", Reason: "deadline_exceeded"})
			return Input{Grace: 30 * time.Second}
		},
		check: func(t *testing.T, rep Report) {
			require.Len(t, rep.Stuck, 1)
			assert.Contains(t, rep.Stuck[0].What, "release.failed came 8m29s after deadline + grace")
			assert.Empty(t, rep.Lost)
		},
	}, {
		name: "late but within the grace is not stuck",
		build: func(r *run) Input {
			a := r.request("a", "g1")
			r.add(Event{Type: events.TypeFailed, Correlation: a, Revision: 1, Time: r.t0.Add(time.Minute + 20*time.Second), Stage: "apply", Reason: "deadline_exceeded"})
			return Input{Grace: 30 * time.Second}
		},
		check: func(t *testing.T, rep Report) { assert.False(t, rep.Failed(), "%+v", rep) },
	}, {
		name: "a wrong object: the Deployment is at an older revision than the last ready one",
		build: func(r *run) Input {
			a := r.request("a", "g1")
			r.through(a, 1, events.TypeReady)
			b := r.request("b", "g2")
			r.through(b, 2, events.TypeReady)
			return Input{Objects: []Object{
				{Release: "chaos/r1", Key: "ConfigMap/r1-gen", Gen: "g2"},
				{Release: "chaos/r1", Key: "Deployment/r1", Gen: "g1"},
			}}
		},
		check: func(t *testing.T, rep Report) {
			require.Len(t, rep.Wrong, 1)
			assert.Contains(t, rep.Wrong[0].What, "Deployment/r1 is gen g1, not g2")
			assert.Contains(t, rep.Wrong[0].What, "the last ready is revision 2")
		},
	}, {
		name: "objects of an uninstalled release are leaked",
		build: func(r *run) Input {
			a := r.request("a", "g1")
			r.through(a, 1, events.TypeReady)
			r.add(Event{Type: events.TypeUninstallRequested, ID: "u", Correlation: "u"})
			r.add(Event{Type: events.TypeUninstalled, Correlation: "u", Revision: 1})
			return Input{Objects: objects("chaos/r1", want("r1", "g1"))}
		},
		check: func(t *testing.T, rep Report) {
			require.Len(t, rep.Leaked, 2)
			assert.Contains(t, rep.Leaked[0].What, "uninstalled last")
		},
	}, {
		name: "an object a later revision pruned is leaked; one of no release too",
		build: func(r *run) Input {
			a := r.request("a", "g1")
			r.through(a, 1, events.TypeReady)
			return Input{Objects: append(objects("chaos/r1", want("r1", "g1")),
				Object{Release: "chaos/r1", Key: "ConfigMap/r1-extra", Gen: "g0"},
				Object{Release: "chaos/ghost", Key: "ConfigMap/ghost-gen", Gen: "g9"})}
		},
		check: func(t *testing.T, rep Report) {
			require.Len(t, rep.Leaked, 2)
			assert.Equal(t, "chaos/ghost", rep.Leaked[0].Release)
			assert.Contains(t, rep.Leaked[1].What, "ConfigMap/r1-extra")
			assert.Empty(t, rep.Wrong)
		},
	}, {
		name: "a failed revision after the last ready one may have left its objects",
		build: func(r *run) Input {
			a := r.request("a", "g1")
			r.through(a, 1, events.TypeReady)
			b := r.request("b", "g2")
			r.add(Event{Type: events.TypeRendered, Correlation: b, Revision: 2})
			r.add(Event{Type: events.TypeApplied, Correlation: b, Revision: 2})
			r.add(Event{Type: events.TypeFailed, Correlation: b, Revision: 2, Stage: "health", Reason: "deadline_exceeded"})
			return Input{Objects: objects("chaos/r1", want("r1", "g2"))}
		},
		check: func(t *testing.T, rep Report) { assert.False(t, rep.Failed(), "%+v", rep) },
	}, {
		name: "a dry run superseding a real request is wrong",
		build: func(r *run) Input {
			a := r.request("a", "g1")
			r.through(a, 1, events.TypeReady)
			b := r.request("b", "g2")
			r.add(Event{Type: events.TypeRequested, ID: "c", Correlation: "c", DryRun: true, Want: want("r1", "g3")})
			r.add(Event{Type: events.TypeSuperseded, Correlation: b, Revision: 2, ByRevision: 3, Stage: "render"})
			r.add(Event{Type: events.TypeDiffed, Correlation: "c", Revision: 3})
			return Input{Objects: objects("chaos/r1", want("r1", "g1"))}
		},
		check: func(t *testing.T, rep Report) {
			require.Len(t, rep.Wrong, 1)
			assert.Contains(t, rep.Wrong[0].What, "by revision 3, a dry run")
		},
	}, {
		name: "dead letters: one explained by its flow's failure, one not",
		build: func(r *run) Input {
			a := r.request("a", "g1")
			r.add(Event{Type: events.TypeFailed, Correlation: a, Revision: 1, Stage: "render", Reason: "invalid_chart"})
			b := r.request("b", "g2")
			r.through(b, 2, events.TypeReady)
			return Input{Objects: objects("chaos/r1", want("r1", "g2")), DeadLetters: []DeadLetter{
				{Service: "renderer", Reason: "bad chart", Subject: "troupe.release.chaos.r1.requested", Type: events.TypeRequested, Correlation: a},
				{Service: "health", Reason: "gave up after 5 deliveries", Subject: "troupe.release.chaos.r1.applied", Type: events.TypeApplied, Correlation: b},
			}}
		},
		check: func(t *testing.T, rep Report) {
			require.Len(t, rep.DeadLetters, 1)
			assert.Contains(t, rep.DeadLetters[0].What, "health dead-lettered")
			assert.Contains(t, rep.DeadLetters[0].What, "ended release.ready")
		},
	}, {
		name: "an event of no flow, a request stored twice, a failed CLI call, a malformed message",
		build: func(r *run) Input {
			a := r.request("a", "g1")
			r.through(a, 1, events.TypeReady)
			r.add(Event{Type: events.TypeReady, Correlation: "nobody", Revision: 7})
			r.add(r.evs[0])
			r.add(Event{Type: events.TypeSuperseded, Correlation: a, Revision: 1, ByRevision: 2, Stage: "health"})
			return Input{Objects: objects("chaos/r1", want("r1", "g1")),
				CallErrors: []CallError{{Release: "chaos/r1", Args: "release r1", Output: "wrong last sequence\n"}},
				Malformed:  []string{"seq 9 (troupe.release.chaos.r1.ready): no id"}}
		},
		check: func(t *testing.T, rep Report) {
			require.Len(t, rep.Wrong, 2)
			assert.Contains(t, rep.Wrong[0].What, "belongs to no request")
			assert.Contains(t, rep.Wrong[1].What, "malformed message in the events stream: seq 9")
			require.Len(t, rep.Duplicated, 2)
			assert.Contains(t, rep.Duplicated[0].What, "release.requested stored twice")
			assert.Equal(t, 2, rep.Revisions, "a request stored twice is numbered twice, as Revisions does")
			require.Len(t, rep.CallErrors, 1)
			assert.Contains(t, rep.CallErrors[0].What, "troupe release r1: wrong last sequence")
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRun()
			in := tc.build(r)
			in.Events = r.evs
			if in.Now.IsZero() {
				in.Now = r.t0.Add(time.Hour)
			}
			rep := Check(in)
			tc.check(t, rep)
			var out bytes.Buffer
			rep.Print(&out)
			assert.Contains(t, out.String(), "releases")
		})
	}
}
