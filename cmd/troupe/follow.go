package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/events"
)

// exitError ends the CLI with its code, after printing its error: 1 when a release failed,
// was superseded or did not finish in time.
type exitError struct {
	code int
	error
}

func (e exitError) Unwrap() error { return e.error }

// watch reads one release's events from a stream sequence on, in stream order.
type watch struct {
	it    jetstream.MessagesContext
	names events.Names
}

func watchRelease(ctx context.Context, js jetstream.JetStream, names events.Names, rel events.Release, fromSeq uint64) (*watch, error) {
	filter, err := names.ReleaseFilter(rel)
	if err != nil {
		return nil, err
	}
	cons, err := js.OrderedConsumer(ctx, names.Stream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: fromSeq,
	})
	if err != nil {
		return nil, fmt.Errorf("follow %s: %w", rel, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("follow %s: %w", rel, err)
	}
	return &watch{it: it, names: names}, nil
}

func (w *watch) stop() { w.it.Stop() }

// next returns the next event; malformed ones are skipped (catalog-check dead-letters them).
func (w *watch) next(ctx context.Context) (event.Event, error) {
	for {
		msg, err := w.it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return event.Event{}, err
		}
		e, err := w.names.Decode(msg.Subject(), msg.Headers(), msg.Data())
		if err == nil {
			return e, nil
		}
	}
}

// Outcome is how a flow a command waited for ended.
type Outcome struct {
	Release  string                `json:"release"`
	Revision int                   `json:"revision"`
	State    string                `json:"state"` // ready, failed, superseded, diffed, uninstalled
	Stage    string                `json:"stage,omitempty"`
	Reason   string                `json:"reason,omitempty"`
	Message  string                `json:"message,omitempty"`
	Objects  []events.ObjectStatus `json:"objects,omitempty"`
	// RolledBackTo is the revision an automatic rollback restored after a failure.
	RolledBackTo int                 `json:"rolledBackTo,omitempty"`
	Diff         []events.ObjectDiff `json:"diff,omitempty"`
	Duration     string              `json:"duration"`
}

// progress prints one line per stage of a flow, as the events arrive.
type progress struct {
	w     io.Writer
	start time.Time
	ready int // the last ready count printed; -1 before the first
	// quietAfter is how long the flow may go without an event before the line that says which
	// service it waits for.
	quietAfter time.Duration
}

func (p *progress) linef(stage, format string, args ...any) {
	if p.w == nil {
		return
	}
	el := time.Since(p.start).Seconds()
	fmt.Fprintf(p.w, "%6.1fs  %-12s %s\n", el, stage, fmt.Sprintf(format, args...))
}

// follow waits for the flow with correlation id corr to end, printing its stages to p. When the
// flow fails and rollbackOnFailure is set, it follows the history's automatic rollback too. It
// returns the outcome, and an exitError when it is not a success.
func follow(ctx context.Context, w *watch, rel events.Release, corr string, rollbackOnFailure bool, p *progress) (Outcome, error) {
	out := Outcome{Release: rel.String()}
	var failed *event.Event // the failure an automatic rollback may follow
	var rollbackWait <-chan time.Time
	done := func() (Outcome, error) {
		out.Duration = time.Since(p.start).Round(time.Millisecond).String()
		switch out.State {
		case "ready", "diffed", "uninstalled":
			if out.RolledBackTo == 0 {
				return out, nil
			}
		}
		return out, exitError{1, errors.New(out.summary())}
	}
	next := make(chan event.Event)
	errc := make(chan error, 1)
	go func() {
		for {
			e, err := w.next(ctx)
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
	last := "" // the type of the flow's last event
	quiet := time.NewTimer(p.quietAfter)
	defer quiet.Stop()
	for {
		var e event.Event
		select {
		case e = <-next:
		case <-quiet.C:
			if hint := nobodyAnswers(last, p.quietAfter); hint != "" {
				p.linef("waiting", "%s", hint)
			}
			continue
		case err := <-errc:
			if ctx.Err() != nil {
				out.State, out.Reason = "unknown", "wait_timeout"
				out.Message = "gave up waiting; the release may still be going: troupe status " + rel.String()
				return done()
			}
			return out, err
		case <-rollbackWait:
			p.linef("rollback", "none: no earlier ready revision to roll back to")
			return done()
		}
		if failed != nil && e.Type() == events.TypeRollbackRequested && events.CausationID(e) == failed.ID() {
			rb, _ := events.Data[events.RollbackRequested](e)
			p.linef("rollback", "automatic, to revision %d", rb.TargetRevision)
			corr, rollbackWait, p.ready = e.ID(), nil, -1
			continue
		}
		if events.CorrelationID(e) != corr {
			continue
		}
		last = e.Type()
		quiet.Reset(p.quietAfter)
		rev := events.Revision(e)
		switch e.Type() {
		case events.TypeRendered:
			d, _ := events.Data[events.Rendered](e)
			out.Revision = rev
			what := fmt.Sprintf("revision %d: %d objects", rev, len(d.Objects))
			if d.Chart != nil {
				what += fmt.Sprintf(" from %s-%s", d.Chart.Name, d.Chart.Version)
			}
			if d.Rollback {
				what += " (the recorded bundle)"
			}
			p.linef("rendered", "%s", what)
		case events.TypeApplied:
			d, _ := events.Data[events.Applied](e)
			counts := map[string]int{}
			for _, o := range d.Inventory {
				counts[o.Action]++
			}
			p.linef("applied", "%d objects: %d created, %d configured, %d unchanged, %d pruned (%s)", len(d.Inventory),
				counts[events.ActionCreated], counts[events.ActionConfigured], counts[events.ActionUnchanged], len(d.Pruned),
				time.Duration(d.ApplyTime).Round(time.Millisecond))
		case events.TypeProgressing:
			d, _ := events.Data[events.Progressing](e)
			if d.Ready != p.ready {
				p.ready = d.Ready
				p.linef("progressing", "ready %d/%d%s", d.Ready, d.Total, waitingFor(d.Objects))
			}
		case events.TypeReady:
			d, _ := events.Data[events.Ready](e)
			if failed != nil {
				out.RolledBackTo = rev
				p.linef("rolled back", "revision %d is ready again", rev)
				return done()
			}
			out.State, out.Revision = "ready", rev
			p.linef("ready", "%d objects ready, %s after the request", d.Objects, time.Duration(d.TimeToReady).Round(time.Millisecond))
			return done()
		case events.TypeFailed:
			d, _ := events.Data[events.Failed](e)
			if failed != nil {
				p.linef("failed", "the rollback failed too: %s: %s", d.Reason, d.Message)
				out.Message += "; the rollback failed too: " + d.Reason + ": " + d.Message
				return done()
			}
			out.State, out.Stage, out.Reason, out.Message, out.Objects = "failed", d.Stage, d.Reason, d.Message, d.Objects
			if rev > 0 {
				out.Revision = rev
			}
			p.linef("failed", "at %s: %s: %s", d.Stage, d.Reason, d.Message)
			for _, o := range d.Objects {
				if o.Status != "Current" && !strings.Contains(d.Message, o.Message) { // said once is enough
					p.linef("", "  %s: %s %s", o.ObjectRef, o.Status, o.Message)
				}
			}
			if rollbackOnFailure && d.Stage != events.StageRollback && d.Stage != events.StageRequest {
				failed = &e
				rollbackWait = time.After(20 * time.Second)
				continue
			}
			return done()
		case events.TypeSuperseded:
			d, _ := events.Data[events.Superseded](e)
			out.State, out.Stage = "superseded", d.Stage
			out.Message = fmt.Sprintf("superseded at %s by revision %d", d.Stage, d.ByRevision)
			p.linef("superseded", "by revision %d (at %s)", d.ByRevision, d.Stage)
			return done()
		case events.TypeDiffed:
			d, _ := events.Data[events.Diffed](e)
			out.State, out.Diff, out.Revision = "diffed", d.Objects, rev
			p.linef("diffed", "dry run: nothing was changed")
			return done()
		case events.TypeUninstalled:
			d, _ := events.Data[events.Uninstalled](e)
			out.State = "uninstalled"
			p.linef("uninstalled", "%d objects deleted, %d kept", len(d.Deleted), len(d.Kept))
			return done()
		}
	}
}

// nobodyAnswers says which service a flow waits for after an event of type last, when it is one
// that answers at once (not the health watcher waiting on the cluster): a service that is not
// running leaves a --wait silent until the timeout otherwise.
func nobodyAnswers(last string, quiet time.Duration) string {
	next, service := waitsFor(last)
	if next == "" || last == events.TypeProgressing {
		return ""
	}
	return fmt.Sprintf("no %s after %s for %s: is the %s running (or busy)? ('troupe graph' lists the services that answer)",
		next, cmp.Or(last, "the request"), quiet, service)
}

// waitsFor names what a flow waits for after an event of type last ("": the request) and the
// service that publishes it; "" when it is not one service's next step.
func waitsFor(last string) (next, service string) {
	switch last {
	case "", events.TypeRequested:
		return events.TypeRendered, "renderer"
	case events.TypeRollbackRequested:
		return events.TypeRendered, "history service"
	case events.TypeRendered:
		return events.TypeApplied, "applier"
	case events.TypeUninstallRequested:
		return events.TypeUninstalled, "applier"
	case events.TypeApplied:
		return events.TypeProgressing, "health watcher"
	case events.TypeProgressing:
		return "release.ready or release.failed", "health watcher"
	}
	return "", ""
}

// waitingFor names the first objects not ready yet.
func waitingFor(objs []events.ObjectStatus) string {
	var names []string
	for _, o := range objs {
		if o.Status != "Current" {
			s := o.Kind + "/" + o.Name
			if o.Message != "" {
				s += " (" + events.Truncate(o.Message, 60) + ")"
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

func (o Outcome) summary() string {
	switch {
	case o.RolledBackTo > 0:
		return fmt.Sprintf("%s revision %d failed at %s (%s): %s; rolled back to revision %d", o.Release, o.Revision, o.Stage, o.Reason, o.Message, o.RolledBackTo)
	case o.State == "failed":
		return fmt.Sprintf("%s revision %d failed at %s (%s): %s", o.Release, o.Revision, o.Stage, o.Reason, o.Message)
	case o.State == "superseded":
		return fmt.Sprintf("%s revision %d was %s", o.Release, o.Revision, o.Message)
	}
	return fmt.Sprintf("%s: %s", o.Release, o.Message)
}
