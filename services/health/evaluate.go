package health

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/troupe-dev/troupe/events"
)

// Phases of a followed revision, as the KV record keeps them.
const (
	phaseProgressing = "progressing"
	phaseReady       = "ready"
	phaseDegraded    = "degraded"
	phaseFailed      = "failed"
	// phaseSettled: every object is Current and the chart's post-phase hooks are due (the
	// applier runs them on release.settled); ready once release.hooked says they ran.
	phaseSettled = "settled"
	// phaseSuperseded is never recorded: the newer revision's record takes the release's key.
	phaseSuperseded = "superseded"
)

// waiting says whether a revision in phase has not ended yet: progressing, or settled waiting
// for its post-phase hooks.
func waiting(phase string) bool { return phase == phaseProgressing || phase == phaseSettled }

// Bounds on the objects one event lists.
const (
	maxFailingObjects  = 100
	maxProgressObjects = 1000
	// maxObjectMessage bounds each object's message in health's events, so that an event of
	// maxProgressObjects objects always fits a NATS message (1 MiB).
	maxObjectMessage = 512
)

// state is what has been decided about one followed revision: what evaluate reads, and returns
// anew in its decision.
type state struct {
	phase     string
	requested time.Time // when the revision was requested: time to ready counts from it
	deadline  time.Time // requested + the revision's timeout
	bundle    string    // the revision's bundle, whose post-phase hooks release.settled names
	// postHooks is the phase of the chart's hooks due once every object is Current (the
	// release.applied's PostHooks), "" when none; hooksDone says release.hooked said they ran.
	postHooks string
	hooksDone bool
	// replacing is set while another revision of the release is on its way to the cluster
	// (rendered, not applied yet): its objects changing then is no degradation of this one.
	replacing bool
	// supersededBy is the newer revision whose release.applied ends this one's wait; 0 if none.
	supersededBy int
	// uninstalledBy is the id of the release.uninstall.requested whose release.uninstalled ends
	// this one's wait; empty if none.
	uninstalledBy string

	published    []events.ObjectStatus // in the last release.progressing
	lastProgress time.Time             // when it was decided
	progress     int                   // release.progressing decided: tells their ids apart
	degraded     []events.ObjectStatus // in the last release.degraded
	degradations int                   // release.degraded decided: tells their ids apart
}

// observation is what the watches hold of a revision's objects, in inventory order.
type observation struct {
	objects []observed
	// complete is false while a watch some object needs has not listed yet: an object missing
	// from it may just not be listed.
	complete bool
}

// observed is one object's health.
type observed struct {
	events.ObjectStatus
	reason string // when Failed: the reason code the revision fails with
}

// decision is what evaluate decided: the state to move to, the event that says so, and when to
// evaluate again if nothing changes before.
type decision struct {
	next  state
	event *outgoing // nil: nothing to publish
	// record says next's phase or counters changed: the KV record is written once event is out.
	record bool
	// retryAt is when to evaluate again though nothing changed (a throttled progress report,
	// the deadline); zero when only a change matters.
	retryAt time.Time
}

// outgoing is an event to publish in reaction to the revision's release.applied.
type outgoing struct {
	typ  string
	data any
	// key tells apart several events of one type of one revision (progress reports,
	// degradations); empty for the others.
	key string
}

// evaluate decides what obs means for a revision in state st at now. While the revision
// progresses: ready once every object is Current; failed at once when an object fails, or at
// the deadline naming what is not ready; else release.progressing when statuses changed, at
// most once per progressInterval. After ready: degraded when an object is no longer Current
// (unless another revision is on its way), and recovered when all are again. A newer revision's
// release.applied, or the release's uninstall, supersedes a revision still progressing. Pure: no locks, no I/O.
func evaluate(st state, obs observation, now time.Time, progressInterval time.Duration) decision {
	switch {
	case st.supersededBy > 0 || st.uninstalledBy != "":
		return supersede(st)
	case st.phase == phaseProgressing:
		return progress(st, obs, now, progressInterval)
	case st.phase == phaseSettled:
		return hooksDue(st, obs, now)
	case st.phase == phaseReady && obs.complete && !obs.allCurrent() && !st.replacing:
		return degrade(st, obs)
	case st.phase == phaseDegraded && obs.complete && obs.allCurrent():
		return heal(st, obs)
	}
	return decision{next: st}
}

func supersede(st state) decision {
	was := st.phase
	st.phase = phaseSuperseded
	if !waiting(was) {
		return decision{next: st} // it ended already: ready is no wait to supersede
	}
	return decision{next: st, event: &outgoing{typ: events.TypeSuperseded,
		data: events.Superseded{ByRevision: st.supersededBy, ByUninstall: st.uninstalledBy, Stage: events.StageHealth}}}
}

// messageEvery is how many progress intervals apart a release.progressing reports objects whose
// statuses did not change, only their messages: a status that changes (an object InProgress
// becomes Current, or fails) is reported an interval after the last report, a rollout's counts
// every ten (a release.progressing is a write to the stream and to the history's view, and a
// delivery to every follower: 1000 releases rolling out at once wrote ~2 each, every second).
const messageEvery = 10

// sameStatuses reports whether a and b hold the same objects in the same statuses, whatever
// their messages say.
func sameStatuses(a, b []events.ObjectStatus) bool {
	return slices.EqualFunc(a, b, func(x, y events.ObjectStatus) bool { return x.ObjectRef == y.ObjectRef && x.Status == y.Status })
}

func progress(st state, obs observation, now time.Time, progressInterval time.Duration) decision {
	statuses := obs.statuses()
	failing := obs.failing()
	switch {
	case obs.complete && obs.allCurrent() && st.postHooks != "" && !st.hooksDone:
		st.phase = phaseSettled
		return decision{next: st, record: true, retryAt: st.deadline, event: &outgoing{typ: events.TypeSettled,
			data: events.Settled{Bundle: st.bundle, Phase: st.postHooks, Objects: len(statuses)}}}
	case obs.complete && obs.allCurrent():
		st.phase = phaseReady
		return decision{next: st, record: true, event: &outgoing{typ: events.TypeReady,
			data: events.Ready{TimeToReady: events.Duration(now.Sub(st.requested)), Objects: len(statuses)}}}
	case len(failing) > 0:
		// The release, revision and reason are beside the message: it says what failed.
		return fail(st, failing[0].reason, describe(statusesOf(failing)), statusesOf(failing))
	case !now.Before(st.deadline):
		waiting := notCurrent(statuses)
		return fail(st, ReasonTimeout,
			fmt.Sprintf("not ready after %s: %s", st.deadline.Sub(st.requested).Round(time.Second), describe(waiting)), waiting)
	case slices.Equal(st.published, statuses):
		return decision{next: st, retryAt: st.deadline}
	case now.Before(st.lastProgress.Add(progressInterval)):
		return decision{next: st, retryAt: earliest(st.lastProgress.Add(progressInterval), st.deadline)}
	case sameStatuses(st.published, statuses) && now.Before(st.lastProgress.Add(messageEvery*progressInterval)):
		// Only what the statuses say changed ("Available: 1/3" → "2/3"): said less often.
		return decision{next: st, retryAt: earliest(st.lastProgress.Add(messageEvery*progressInterval), st.deadline)}
	}
	st.published, st.lastProgress = statuses, now
	st.progress++
	objects := statuses
	if len(objects) > maxProgressObjects {
		objects = objects[:maxProgressObjects]
	}
	return decision{next: st, retryAt: st.deadline, event: &outgoing{typ: events.TypeProgressing,
		data: events.Progressing{Objects: objects, Ready: len(statuses) - len(notCurrent(statuses)), Total: len(statuses)},
		key:  strconv.Itoa(st.progress)}}
}

// hooksDue waits, every object Current, for the post-phase hooks: ready once they ran, failed if
// they have not by the deadline (a hook that fails ends the flow at the applier).
func hooksDue(st state, obs observation, now time.Time) decision {
	switch {
	case st.hooksDone:
		st.phase = phaseReady
		return decision{next: st, record: true, event: &outgoing{typ: events.TypeReady,
			data: events.Ready{TimeToReady: events.Duration(now.Sub(st.requested)), Objects: len(obs.objects)}}}
	case !now.Before(st.deadline):
		return fail(st, ReasonTimeout, fmt.Sprintf("every object is ready, but its %s hooks did not finish within %s (the applier runs them)",
			st.postHooks, st.deadline.Sub(st.requested).Round(time.Second)), nil)
	}
	return decision{next: st, retryAt: st.deadline}
}

func fail(st state, reason, message string, objects []events.ObjectStatus) decision {
	st.phase = phaseFailed
	if len(objects) > maxFailingObjects {
		objects = objects[:maxFailingObjects]
	}
	return decision{next: st, record: true, event: &outgoing{typ: events.TypeFailed, data: events.Failed{
		Stage: events.StageHealth, Reason: reason, Message: events.Truncate(message, events.MaxMessageLength), Objects: objects}}}
}

func degrade(st state, obs observation) decision {
	bad := notCurrent(obs.statuses())
	st.phase, st.degraded = phaseDegraded, bad
	st.degradations++
	return decision{next: st, record: true, event: &outgoing{typ: events.TypeDegraded,
		data: events.Degraded{Objects: bad[:min(len(bad), maxFailingObjects)]}, key: strconv.Itoa(st.degradations)}}
}

// heal names the objects that were degraded, as they are now; all of them when which were
// is not known (a degradation from before a restart).
func heal(st state, obs observation) decision {
	statuses := obs.statuses()
	var back []events.ObjectStatus
	for _, d := range st.degraded {
		for _, s := range statuses {
			if s.ObjectRef == d.ObjectRef {
				back = append(back, s)
			}
		}
	}
	if len(back) == 0 {
		back = statuses
	}
	st.phase = phaseReady
	return decision{next: st, record: true, event: &outgoing{typ: events.TypeRecovered,
		data: events.Recovered{Objects: back[:min(len(back), maxFailingObjects)]}, key: strconv.Itoa(st.degradations)}}
}

func (o observation) statuses() []events.ObjectStatus {
	out := make([]events.ObjectStatus, len(o.objects))
	for i, ob := range o.objects {
		out[i] = ob.ObjectStatus
	}
	return out
}

func (o observation) allCurrent() bool {
	for _, ob := range o.objects {
		if ob.Status != events.StatusCurrent {
			return false
		}
	}
	return true
}

func (o observation) failing() []observed {
	var out []observed
	for _, ob := range o.objects {
		if ob.Status == events.StatusFailed {
			out = append(out, ob)
		}
	}
	return out
}

func statusesOf(obs []observed) []events.ObjectStatus {
	return observation{objects: obs}.statuses()
}

func notCurrent(statuses []events.ObjectStatus) []events.ObjectStatus {
	var out []events.ObjectStatus
	for _, s := range statuses {
		if s.Status != events.StatusCurrent {
			out = append(out, s)
		}
	}
	return out
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// describe names objects and what is wrong with them, for a person.
func describe(objects []events.ObjectStatus) string {
	var parts []string
	for i, o := range objects {
		if i == 10 {
			parts = append(parts, fmt.Sprintf("and %d more", len(objects)-10))
			break
		}
		name := o.Name
		if o.Namespace != "" {
			name = o.Namespace + "/" + o.Name
		}
		parts = append(parts, fmt.Sprintf("%s %s: %s (%s)", o.Kind, name, o.Message, o.Status))
	}
	return strings.Join(parts, "; ")
}
