package flow

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/historyapi"
)

// StateUnknown is the state of an Outcome whose wait ended before the flow did.
const StateUnknown = "unknown"

// ReasonWaitTimeout is the reason of an Outcome whose wait ended before the flow did.
const ReasonWaitTimeout = "wait_timeout"

// Outcome is how a flow ended.
type Outcome struct {
	Release  string `json:"release"`
	Revision int    `json:"revision"`
	// State is ready, failed, superseded, diffed, uninstalled (historyapi's words), or unknown
	// when the wait ended first.
	State   string                `json:"state"`
	Stage   string                `json:"stage,omitempty"`
	Reason  string                `json:"reason,omitempty"`
	Message string                `json:"message,omitempty"`
	Objects []events.ObjectStatus `json:"objects,omitempty"`
	// RolledBackTo is the revision an automatic rollback restored after a failure.
	RolledBackTo int `json:"rolledBackTo,omitempty"`
	// Uninstalled says an automatic uninstall undid a failed first install.
	Uninstalled bool                `json:"uninstalled,omitempty"`
	Diff        []events.ObjectDiff `json:"diff,omitempty"`
	Duration    string              `json:"duration"`
}

// Succeeded reports whether the flow did what it was asked: ready, diffed or uninstalled, and
// not rolled back.
func (o Outcome) Succeeded() bool {
	switch o.State {
	case historyapi.StateReady, historyapi.StateDiffed, historyapi.StateUninstalled:
		return o.RolledBackTo == 0
	}
	return false
}

// Summary says in one line how a flow that did not succeed ended.
func (o Outcome) Summary() string {
	switch {
	case o.RolledBackTo > 0:
		return fmt.Sprintf("%s revision %d failed at %s (%s): %s; rolled back to revision %d", o.Release, o.Revision, o.Stage, o.Reason, o.Message, o.RolledBackTo)
	case o.Uninstalled:
		return fmt.Sprintf("%s revision %d failed at %s (%s): %s; uninstalled, as nothing was ready before", o.Release, o.Revision, o.Stage, o.Reason, o.Message)
	case o.State == historyapi.StateFailed:
		return fmt.Sprintf("%s revision %d failed at %s (%s): %s", o.Release, o.Revision, o.Stage, o.Reason, o.Message)
	case o.State == historyapi.StateSuperseded:
		return fmt.Sprintf("%s revision %d was %s", o.Release, o.Revision, o.Message)
	}
	return fmt.Sprintf("%s: %s", o.Release, o.Message)
}

// Step is one thing a followed flow did, as it happened: Stage is a word for it (mostly the
// event's type without "release.": rendered, applied, progressing, ready…; rollback, rolled
// back; waiting, when it went quiet; empty for a line that goes on the step before), Text what
// it says to people.
type Step struct {
	Stage string
	Text  string
}

// FollowOptions tune Follow.
type FollowOptions struct {
	// RollbackOnFailure follows the history's automatic rollback after a failure too (the
	// request asked for rollbackOnFailure), or its automatic uninstall of a failed first install.
	RollbackOnFailure bool
	// QuietAfter is how long the flow may go without an event before a "waiting" step that says
	// which service it waits for. Default 10s.
	QuietAfter time.Duration
	// RollbackWait is how long to wait after a failure for the automatic rollback to start.
	// Default 20s.
	RollbackWait time.Duration
	// Start is when the flow began, for the Outcome's Duration. Default: when Follow is called.
	Start time.Time
}

// Follow waits for the flow with correlation id corr of rel to end, reading w, and returns its
// outcome; report (nil: nothing) gets each Step as it happens. When ctx ends first, the outcome
// is StateUnknown (ReasonWaitTimeout), not an error: the release may still be going. The error
// is w's, when reading the stream fails.
func Follow(ctx context.Context, w *Watcher, rel events.Release, corr string, o FollowOptions, report func(Step)) (Outcome, error) {
	if report == nil {
		report = func(Step) {}
	}
	start := cmp.Or(o.Start, time.Now())
	quietAfter := cmp.Or(o.QuietAfter, 10*time.Second)
	f := &follower{out: Outcome{Release: rel.String()}, corr: corr, rollbackOnFailure: o.RollbackOnFailure, ready: -1, report: report}
	ctx, cancel := context.WithCancel(ctx) // stops the reader below when Follow returns
	defer cancel()
	next := make(chan event.Event)
	errc := make(chan error, 1)
	go func() {
		for {
			e, err := w.Next(ctx)
			if err != nil {
				errc <- err
				return
			}
			select {
			case next <- e:
			case <-ctx.Done():
				return
			}
		}
	}()
	quiet := time.NewTimer(quietAfter)
	defer quiet.Stop()
	var rollbackWait <-chan time.Time
	for {
		var e event.Event
		select {
		case e = <-next:
		case <-quiet.C:
			if hint := nobodyAnswers(f.last, quietAfter); hint != "" {
				report(Step{"waiting", hint})
			} else if f.last == events.TypeProgressing && f.progress != "" {
				// The health watcher reports changes only: say again what it waits for.
				report(Step{"waiting", "still " + f.progress})
				quiet.Reset(quietAfter)
			}
			continue
		case <-ctx.Done():
			return f.gaveUp(rel, start), nil
		case err := <-errc:
			if ctx.Err() != nil {
				return f.gaveUp(rel, start), nil
			}
			return f.out, err
		case <-rollbackWait:
			report(Step{events.StageRollback, "none: no earlier ready revision to roll back to, and nothing to uninstall"})
			return f.end(start), nil
		}
		switch f.fold(e) {
		case ignored:
		case rollbackStarted:
			rollbackWait = nil
		case rollbackAwaited:
			quiet.Reset(quietAfter)
			rollbackWait = time.After(cmp.Or(o.RollbackWait, 20*time.Second))
		case ended:
			return f.end(start), nil
		default:
			quiet.Reset(quietAfter)
		}
	}
}

// effect is what folding one event did to the flow.
type effect int

const (
	ignored         effect = iota // not the flow's event
	progressed                    // a step of the flow, not its end
	rollbackAwaited               // it failed; an automatic rollback may follow
	rollbackStarted               // the automatic rollback started: its flow is followed now
	ended                         // the flow ended
)

// follower folds one flow's events, in stream order, into its outcome.
type follower struct {
	out               Outcome
	corr              string // the flow followed: the request's id, then the rollback's
	rollbackOnFailure bool
	failed            string // the id of the failure an automatic rollback may follow
	undo              string // StageUninstall when an automatic uninstall follows it
	ready             int    // the last ready count reported; -1 before the first
	last              string // the type of the flow's last event
	// progress is what the last release.progressing said (ready x/y, waiting for what and why),
	// said again while nothing changes.
	progress string
	report   func(Step)
}

func (f *follower) step(stage, format string, args ...any) {
	f.report(Step{stage, fmt.Sprintf(format, args...)})
}

func (f *follower) end(start time.Time) Outcome {
	f.out.Duration = time.Since(start).Round(time.Millisecond).String()
	return f.out
}

// gaveUp ends a wait that ended before the flow did.
func (f *follower) gaveUp(rel events.Release, start time.Time) Outcome {
	f.out.State, f.out.Reason = StateUnknown, ReasonWaitTimeout
	f.out.Message = "gave up waiting; the release may still be going: troupe status " + rel.String()
	return f.end(start)
}

// fold folds e into the outcome, reporting the step it is.
func (f *follower) fold(e event.Event) effect {
	if f.failed != "" && e.Type() == events.TypeRollbackRequested && events.CausationID(e) == f.failed {
		rb, _ := events.Data[events.RollbackRequested](e)
		f.step(events.StageRollback, "automatic, to revision %d", rb.TargetRevision)
		f.corr, f.ready = e.ID(), -1
		return rollbackStarted
	}
	if f.failed != "" && e.Type() == events.TypeUninstallRequested && events.CausationID(e) == f.failed {
		f.step(events.StageUninstall, "automatic: nothing was ready before this first install")
		f.corr, f.ready, f.undo = e.ID(), -1, events.StageUninstall
		return rollbackStarted
	}
	if events.CorrelationID(e) != f.corr {
		return ignored
	}
	f.last = e.Type()
	rev := events.Revision(e)
	stage := short(e.Type())
	switch e.Type() {
	case events.TypeRendered:
		d, _ := events.Data[events.Rendered](e)
		if !d.Rollback || f.out.Revision == 0 {
			// An automatic rollback's bundle is the restored revision's: the outcome stays the
			// failed one's (RolledBackTo names the other). A `troupe rollback` starts with it.
			f.out.Revision = rev
		}
		what := fmt.Sprintf("revision %d: %d objects", rev, len(d.Objects))
		if d.Chart != nil {
			what += fmt.Sprintf(" from %s-%s", d.Chart.Name, d.Chart.Version)
		}
		if d.Rollback {
			what += " (the recorded bundle)"
		}
		f.step(stage, "%s", what)
	case events.TypeHooked:
		d, _ := events.Data[events.Hooked](e)
		f.step(stage, "%s", hookedDetail(d))
	case events.TypeSettled:
		d, _ := events.Data[events.Settled](e)
		if d != nil {
			f.step(stage, "%d objects ready; %s hooks due", d.Objects, d.Phase)
		}
	case events.TypeApplied:
		d, _ := events.Data[events.Applied](e)
		counts := map[string]int{}
		for _, o := range d.Inventory {
			counts[o.Action]++
		}
		f.step(stage, "%d objects: %d created, %d configured, %d unchanged, %d pruned (%s)", len(d.Inventory),
			counts[events.ActionCreated], counts[events.ActionConfigured], counts[events.ActionUnchanged], len(d.Pruned),
			time.Duration(d.ApplyTime).Round(time.Millisecond))
	case events.TypeProgressing:
		d, _ := events.Data[events.Progressing](e)
		f.progress = fmt.Sprintf("ready %d/%d%s", d.Ready, d.Total, waitingFor(d.Objects))
		if d.Ready != f.ready {
			f.ready = d.Ready
			f.step(stage, "%s", f.progress)
		}
	case events.TypeReady:
		d, _ := events.Data[events.Ready](e)
		if f.failed != "" {
			f.out.RolledBackTo = rev
			f.step("rolled back", "revision %d is ready again", rev)
			return ended
		}
		f.out.State, f.out.Revision = historyapi.StateReady, rev
		f.step(stage, "%d objects ready, %s after the request", d.Objects, time.Duration(d.TimeToReady).Round(time.Millisecond))
		return ended
	case events.TypeFailed:
		d, _ := events.Data[events.Failed](e)
		if f.failed != "" {
			undo := cmp.Or(f.undo, events.StageRollback)
			f.step(stage, "the %s failed too: %s: %s", undo, d.Reason, d.Message)
			f.out.Message += "; the " + undo + " failed too: " + d.Reason + ": " + d.Message
			return ended
		}
		f.out.State, f.out.Stage, f.out.Reason, f.out.Message, f.out.Objects = historyapi.StateFailed, d.Stage, d.Reason, d.Message, d.Objects
		if rev > 0 {
			f.out.Revision = rev
		}
		f.step(stage, "at %s: %s: %s", d.Stage, d.Reason, d.Message)
		for _, o := range d.Objects {
			if o.Status != events.StatusCurrent && !strings.Contains(d.Message, o.Message) { // said once is enough
				f.step("", "  %s: %s %s", o.ObjectRef, o.Status, o.Message)
			}
		}
		if f.rollbackOnFailure && d.Stage != events.StageRollback && d.Stage != events.StageRequest {
			f.failed = e.ID()
			return rollbackAwaited
		}
		return ended
	case events.TypeSuperseded:
		d, _ := events.Data[events.Superseded](e)
		f.out.State, f.out.Stage = historyapi.StateSuperseded, d.Stage
		f.out.Message = fmt.Sprintf("superseded at %s by %s", d.Stage, d.By())
		f.step(stage, "by %s (at %s)", d.By(), d.Stage)
		return ended
	case events.TypeDiffed:
		d, _ := events.Data[events.Diffed](e)
		f.out.State, f.out.Diff, f.out.Revision = historyapi.StateDiffed, d.Objects, rev
		f.step(stage, "dry run: nothing was changed")
		return ended
	case events.TypeUninstalled:
		d, _ := events.Data[events.Uninstalled](e)
		if f.undo == events.StageUninstall {
			f.out.Uninstalled = true // the outcome stays the failed install's
			f.step(stage, "%d objects deleted, %d kept", len(d.Deleted), len(d.Kept))
			return ended
		}
		f.out.State = historyapi.StateUninstalled
		f.step(stage, "%d objects deleted, %d kept", len(d.Deleted), len(d.Kept))
		return ended
	}
	return progressed
}

// nobodyAnswers says which service a flow waits for after an event of type last, when it is one
// that answers at once (not the health watcher waiting on the cluster): a service that is not
// running leaves a wait silent until its timeout otherwise.
func nobodyAnswers(last string, quiet time.Duration) string {
	next, service := WaitsFor(last)
	if next == "" || last == events.TypeProgressing {
		return ""
	}
	return fmt.Sprintf("no %s after %s for %s: is the %s running (or busy)? ('troupe graph' lists the services that answer)",
		next, cmp.Or(last, "the request"), quiet, service)
}

// WaitsFor names what a flow waits for after an event of type last ("": the request) and the
// service that publishes it, as people call it; "" when it is not one service's next step.
//
// Which type comes next is the choreography's (the catalog does not say who reacts to what: the
// running services do, see `troupe graph`); who publishes it is the catalog's PublishedBy, and a
// test keeps the two in step.
func WaitsFor(last string) (next, service string) {
	switch last {
	case "", events.TypeRequested:
		return events.TypeRendered, "renderer"
	case events.TypeRollbackRequested:
		return events.TypeRendered, "history service"
	case events.TypeRendered, events.TypeHooked, events.TypeApproved, events.TypeRejected:
		return events.TypeApplied, "applier"
	case events.TypeUninstallRequested:
		return events.TypeUninstalled, "applier"
	case events.TypeApplied:
		return events.TypeProgressing, "health watcher"
	case events.TypeSettled:
		return events.TypeHooked, "applier"
	case events.TypeProgressing:
		return events.TypeReady + " or " + events.TypeFailed, "health watcher"
	}
	return "", ""
}

// hookedDetail says what a phase of hooks did: "pre-install: Job/db-init 2.1s, Secret/init 12ms
// (deleted)".
func hookedDetail(d *events.Hooked) string {
	if d == nil {
		return ""
	}
	var runs []string
	for _, h := range d.Hooks {
		s := fmt.Sprintf("%s/%s %s", h.Kind, h.Name, time.Duration(h.Duration).Round(time.Millisecond))
		if h.Deleted {
			s += " (deleted)"
		}
		runs = append(runs, s)
	}
	return d.Phase + ": " + strings.Join(runs, ", ")
}

// waitingFor names the first objects not ready yet, and why (room for a scheduler's reason).
func waitingFor(objs []events.ObjectStatus) string {
	var names []string
	for _, o := range objs {
		if o.Status != events.StatusCurrent {
			s := o.Kind + "/" + o.Name
			if o.Message != "" {
				s += " (" + events.Truncate(o.Message, 160) + ")"
			}
			names = append(names, s)
		}
	}
	if len(names) == 0 {
		return ""
	}
	if len(names) > 2 {
		names = append(names[:2], fmt.Sprintf("%d more", len(names)-2))
	}
	return ", waiting for " + strings.Join(names, ", ")
}

// short is an event type without "release.": what people call it.
func short(typ string) string { return strings.TrimPrefix(typ, "release.") }
