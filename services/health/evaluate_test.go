package health

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/troupe-dev/troupe/events"
)

// TestEvaluate: what the health watcher decides from a revision's state and what the watches
// show, without a cluster or NATS.
func TestEvaluate(t *testing.T) {
	requested := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	deadline := requested.Add(5 * time.Minute)
	now := requested.Add(30 * time.Second)
	const interval = time.Second

	config := events.ObjectRef{APIVersion: "v1", Kind: "ConfigMap", Namespace: "prod", Name: "config"}
	web := events.ObjectRef{APIVersion: "apps/v1", Kind: "Deployment", Namespace: "prod", Name: "web"}
	status := func(ref events.ObjectRef, s, msg string) events.ObjectStatus {
		return events.ObjectStatus{ObjectRef: ref, Status: s, Message: msg}
	}
	configCurrent := status(config, events.StatusCurrent, "Resource is always ready")
	webCurrent := status(web, events.StatusCurrent, "Deployment is available. Replicas: 1")
	webProgressing := status(web, events.StatusInProgress, "Available: 0/1")
	webRolling := status(web, events.StatusInProgress, "Updated: 1/2")
	webCrashing := status(web, events.StatusFailed, "pod web-1: container app: CrashLoopBackOff")
	webGone := status(web, events.StatusNotFound, "not found")
	see := func(statuses ...events.ObjectStatus) observation {
		obs := observation{complete: true}
		for _, s := range statuses {
			o := observed{ObjectStatus: s}
			if s.Status == events.StatusFailed {
				o.reason = ReasonCrashLoop
			}
			obs.objects = append(obs.objects, o)
		}
		return obs
	}
	unlisted := see(configCurrent, webCurrent)
	unlisted.complete = false

	progressing := state{phase: phaseProgressing, requested: requested, deadline: deadline}
	with := func(st state, change func(*state)) state {
		change(&st)
		return st
	}
	ready := with(progressing, func(st *state) { st.phase = phaseReady })
	withHooks := with(progressing, func(st *state) {
		st.bundle, st.postHooks = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", events.HookPostInstall
	})
	settled := with(withHooks, func(st *state) { st.phase = phaseSettled })
	degraded := with(ready, func(st *state) {
		st.phase, st.degraded, st.degradations = phaseDegraded, []events.ObjectStatus{webGone}, 1
	})

	for _, tc := range []struct {
		name string
		st   state
		obs  observation
		now  time.Time
		want decision
	}{
		{
			name: "every object Current: ready, with the time from the request",
			st:   progressing, obs: see(configCurrent, webCurrent), now: now,
			want: decision{next: ready, record: true, event: &outgoing{typ: events.TypeReady,
				data: events.Ready{TimeToReady: events.Duration(30 * time.Second), Objects: 2}}},
		},
		{
			name: "every object Current, post-install hooks due: settled, and the applier's cue",
			st:   withHooks, obs: see(configCurrent, webCurrent), now: now,
			want: decision{next: with(withHooks, func(st *state) { st.phase = phaseSettled }), record: true, retryAt: deadline,
				event: &outgoing{typ: events.TypeSettled, data: events.Settled{Bundle: "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", Phase: events.HookPostInstall, Objects: 2}}},
		},
		{
			name: "settled, the hooks not run yet: wait",
			st:   settled, obs: see(configCurrent, webCurrent), now: now,
			want: decision{next: settled, retryAt: deadline},
		},
		{
			name: "settled, the hooks ran: ready, with the time from the request",
			st:   with(settled, func(st *state) { st.hooksDone = true }), obs: see(configCurrent, webProgressing), now: now,
			want: decision{next: with(settled, func(st *state) { st.hooksDone, st.phase = true, phaseReady }), record: true,
				event: &outgoing{typ: events.TypeReady, data: events.Ready{TimeToReady: events.Duration(30 * time.Second), Objects: 2}}},
		},
		{
			name: "the hooks ran before the objects were all Current (a restart): ready at once",
			st:   with(withHooks, func(st *state) { st.hooksDone = true }), obs: see(configCurrent, webCurrent), now: now,
			want: decision{next: with(withHooks, func(st *state) { st.hooksDone, st.phase = true, phaseReady }), record: true,
				event: &outgoing{typ: events.TypeReady, data: events.Ready{TimeToReady: events.Duration(30 * time.Second), Objects: 2}}},
		},
		{
			name: "settled at the deadline: failed, the hooks named",
			st:   settled, obs: see(configCurrent, webCurrent), now: deadline,
			want: decision{next: with(settled, func(st *state) { st.phase = phaseFailed }), record: true,
				event: &outgoing{typ: events.TypeFailed, data: events.Failed{Stage: events.StageHealth, Reason: ReasonTimeout,
					Message: "every object is ready, but its post-install hooks did not finish within 5m0s (the applier runs them)"}}},
		},
		{
			name: "settled, a newer revision applied: superseded",
			st:   with(settled, func(st *state) { st.supersededBy = 3 }), obs: see(configCurrent, webCurrent), now: now,
			want: decision{next: with(settled, func(st *state) { st.supersededBy, st.phase = 3, phaseSuperseded }),
				event: &outgoing{typ: events.TypeSuperseded, data: events.Superseded{ByRevision: 3, Stage: events.StageHealth}}},
		},
		{
			name: "Current but a watch has not listed: not ready yet, progress",
			st:   progressing, obs: unlisted, now: now,
			want: decision{retryAt: deadline,
				next: with(progressing, func(st *state) {
					st.published, st.lastProgress, st.progress = []events.ObjectStatus{configCurrent, webCurrent}, now, 1
				}),
				event: &outgoing{typ: events.TypeProgressing, key: "1",
					data: events.Progressing{Objects: []events.ObjectStatus{configCurrent, webCurrent}, Ready: 2, Total: 2}}},
		},
		{
			name: "an object fails: failed at once, with its reason, naming it alone",
			st:   progressing, obs: see(configCurrent, webCrashing), now: now,
			want: decision{next: with(progressing, func(st *state) { st.phase = phaseFailed }), record: true,
				event: &outgoing{typ: events.TypeFailed, data: events.Failed{Stage: events.StageHealth, Reason: ReasonCrashLoop,
					Message: "Deployment prod/web: pod web-1: container app: CrashLoopBackOff (Failed)",
					Objects: []events.ObjectStatus{webCrashing}}}},
		},
		{
			name: "the deadline passes: failed, naming what is not ready",
			st:   progressing, obs: see(configCurrent, webProgressing), now: deadline,
			want: decision{next: with(progressing, func(st *state) { st.phase = phaseFailed }), record: true,
				event: &outgoing{typ: events.TypeFailed, data: events.Failed{Stage: events.StageHealth, Reason: ReasonTimeout,
					Message: "not ready after 5m0s: Deployment prod/web: Available: 0/1 (InProgress)",
					Objects: []events.ObjectStatus{webProgressing}}}},
		},
		{
			name: "statuses changed: progress, counted, and look again at the deadline",
			st: with(progressing, func(st *state) {
				st.published, st.lastProgress, st.progress = []events.ObjectStatus{webGone}, now.Add(-interval), 3
			}),
			obs: see(configCurrent, webProgressing), now: now,
			want: decision{retryAt: deadline,
				next: with(progressing, func(st *state) {
					st.published, st.lastProgress, st.progress = []events.ObjectStatus{configCurrent, webProgressing}, now, 4
				}),
				event: &outgoing{typ: events.TypeProgressing, key: "4",
					data: events.Progressing{Objects: []events.ObjectStatus{configCurrent, webProgressing}, Ready: 1, Total: 2}}},
		},
		{
			name: "statuses changed within the interval: nothing yet, look again once it passed",
			st: with(progressing, func(st *state) {
				st.published, st.lastProgress, st.progress = []events.ObjectStatus{webGone}, now.Add(-interval/4), 3
			}),
			obs: see(configCurrent, webProgressing), now: now,
			want: decision{retryAt: now.Add(interval * 3 / 4),
				next: with(progressing, func(st *state) {
					st.published, st.lastProgress, st.progress = []events.ObjectStatus{webGone}, now.Add(-interval/4), 3
				})},
		},
		{
			name: "only a message changed, an interval ago: nothing yet, look again ten intervals after the last",
			st: with(progressing, func(st *state) {
				st.published, st.lastProgress, st.progress = []events.ObjectStatus{configCurrent, webProgressing}, now.Add(-interval), 3
			}),
			obs: see(configCurrent, webRolling), now: now,
			want: decision{retryAt: now.Add(9 * interval),
				next: with(progressing, func(st *state) {
					st.published, st.lastProgress, st.progress = []events.ObjectStatus{configCurrent, webProgressing}, now.Add(-interval), 3
				})},
		},
		{
			name: "only a message changed, ten intervals ago: progress",
			st: with(progressing, func(st *state) {
				st.published, st.lastProgress, st.progress = []events.ObjectStatus{configCurrent, webProgressing}, now.Add(-10*interval), 3
			}),
			obs: see(configCurrent, webRolling), now: now,
			want: decision{retryAt: deadline,
				next: with(progressing, func(st *state) {
					st.published, st.lastProgress, st.progress = []events.ObjectStatus{configCurrent, webRolling}, now, 4
				}),
				event: &outgoing{typ: events.TypeProgressing, key: "4",
					data: events.Progressing{Objects: []events.ObjectStatus{configCurrent, webRolling}, Ready: 1, Total: 2}}},
		},
		{
			name: "statuses unchanged: nothing, look again at the deadline",
			st: with(progressing, func(st *state) {
				st.published, st.lastProgress, st.progress = []events.ObjectStatus{configCurrent, webProgressing}, now.Add(-time.Minute), 3
			}),
			obs: see(configCurrent, webProgressing), now: now,
			want: decision{retryAt: deadline,
				next: with(progressing, func(st *state) {
					st.published, st.lastProgress, st.progress = []events.ObjectStatus{configCurrent, webProgressing}, now.Add(-time.Minute), 3
				})},
		},
		{
			name: "a newer revision applied while progressing: superseded",
			st:   with(progressing, func(st *state) { st.supersededBy = 2 }), obs: see(configCurrent, webProgressing), now: now,
			want: decision{next: with(progressing, func(st *state) { st.phase, st.supersededBy = phaseSuperseded, 2 }),
				event: &outgoing{typ: events.TypeSuperseded, data: events.Superseded{ByRevision: 2, Stage: events.StageHealth}}},
		},
		{
			name: "the release uninstalled while progressing: superseded by the uninstall",
			st:   with(progressing, func(st *state) { st.uninstalledBy = "u1" }), obs: see(configCurrent, webProgressing), now: now,
			want: decision{next: with(progressing, func(st *state) { st.phase, st.uninstalledBy = phaseSuperseded, "u1" }),
				event: &outgoing{typ: events.TypeSuperseded, data: events.Superseded{ByUninstall: "u1", Stage: events.StageHealth}}},
		},
		{
			name: "a newer revision applied after ready: let go, nothing to say",
			st:   with(ready, func(st *state) { st.supersededBy = 2 }), now: now,
			want: decision{next: with(ready, func(st *state) { st.phase, st.supersededBy = phaseSuperseded, 2 })},
		},
		{
			name: "ready, still Current: nothing",
			st:   ready, obs: see(configCurrent, webCurrent), now: now,
			want: decision{next: ready},
		},
		{
			name: "ready, an object gone: degraded, naming it",
			st:   ready, obs: see(configCurrent, webGone), now: now,
			want: decision{next: degraded, record: true, event: &outgoing{typ: events.TypeDegraded, key: "1",
				data: events.Degraded{Objects: []events.ObjectStatus{webGone}}}},
		},
		{
			name: "ready, an object gone while another revision is on its way: no degradation",
			st:   with(ready, func(st *state) { st.replacing = true }), obs: see(configCurrent, webGone), now: now,
			want: decision{next: with(ready, func(st *state) { st.replacing = true })},
		},
		{
			name: "ready, a watch not listed: no degradation",
			st:   ready, obs: observation{objects: see(configCurrent, webGone).objects}, now: now,
			want: decision{next: ready},
		},
		{
			name: "degraded, Current again: recovered, naming what was degraded",
			st:   degraded, obs: see(configCurrent, webCurrent), now: now,
			want: decision{next: with(degraded, func(st *state) { st.phase = phaseReady }), record: true,
				event: &outgoing{typ: events.TypeRecovered, key: "1", data: events.Recovered{Objects: []events.ObjectStatus{webCurrent}}}},
		},
		{
			name: "degraded before a restart, Current again: recovered, naming every object",
			st:   with(degraded, func(st *state) { st.degraded = nil }), obs: see(configCurrent, webCurrent), now: now,
			want: decision{next: with(degraded, func(st *state) { st.phase, st.degraded = phaseReady, nil }), record: true,
				event: &outgoing{typ: events.TypeRecovered, key: "1",
					data: events.Recovered{Objects: []events.ObjectStatus{configCurrent, webCurrent}}}},
		},
		{
			name: "degraded, still not Current: nothing",
			st:   degraded, obs: see(configCurrent, webProgressing), now: now,
			want: decision{next: degraded},
		},
		{
			name: "failed: nothing more",
			st:   with(progressing, func(st *state) { st.phase = phaseFailed }), obs: see(configCurrent, webCurrent), now: now,
			want: decision{next: with(progressing, func(st *state) { st.phase = phaseFailed })},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, evaluate(tc.st, tc.obs, tc.now, interval))
		})
	}
}

// TestEvaluateBoundsEvents: a failure lists at most 100 objects, and its message names ten.
func TestEvaluateBoundsEvents(t *testing.T) {
	requested := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	var obs observation
	obs.complete = true
	for i := range 150 {
		obs.objects = append(obs.objects, observed{reason: ReasonImagePull, ObjectStatus: events.ObjectStatus{
			ObjectRef: events.ObjectRef{APIVersion: "v1", Kind: "Pod", Namespace: "prod", Name: "p" + string(rune('a'+i%26)) + string(rune('a'+i/26))},
			Status:    events.StatusFailed, Message: "ErrImagePull"}})
	}
	d := evaluate(state{phase: phaseProgressing, requested: requested, deadline: requested.Add(time.Hour)}, obs, requested, time.Second)
	f, ok := d.event.data.(events.Failed)
	if assert.True(t, ok, "a release.failed") {
		assert.Len(t, f.Objects, 100)
		assert.Contains(t, f.Message, "; and 140 more")
		assert.NoError(t, f.Validate())
	}
}
