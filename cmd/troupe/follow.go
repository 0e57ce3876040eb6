package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/flow"
)

// exitError ends the CLI with its code, after printing its error: 1 when a release failed,
// was superseded or did not finish in time.
type exitError struct {
	code int
	error
}

func (e exitError) Unwrap() error { return e.error }

// progress prints one line per step of a flow (flow.Follow's), as the events arrive; with gates,
// the gates' lines among them.
type progress struct {
	w     io.Writer
	start time.Time
	gates *gateWatch
}

func (p *progress) step(s flow.Step) {
	if p.gates != nil {
		p.gates.step(s, p.print)
		return
	}
	p.print(s)
}

func (p *progress) print(s flow.Step) {
	if p.w == nil {
		return
	}
	el := time.Since(p.start).Seconds()
	fmt.Fprintf(p.w, "%6.1fs  %-12s %s\n", el, s.Stage, s.Text)
}

// stageGate is the word of the steps a gateWatch adds.
const stageGate = "gate"

// gateWatch says, beside flow.Follow, what the gates of a followed flow do — which gates its
// rendered revision waits for, then each verdict as it comes — since Follow's steps say nothing
// of them. It reads the release's events with a watcher of its own, from the same sequence, and
// keeps its lines in the flow's order: "waiting for approval by …" after the rendered step, the
// verdicts before the step of whatever came after them (applied, failed…).
type gateWatch struct {
	mu      sync.Mutex
	changed chan struct{} // closed, and replaced, at every change: a broadcast that can time out
	flows   map[string]bool
	failed  map[string]bool // the release.failed events of the flows followed: an automatic rollback follows one
	// read counts the release.rendered events of the flows that the watch read, shown those Follow
	// reported; past says the watch read an event after the last rendered revision's verdicts.
	read, shown int
	past        bool
	// queue holds lines about the read-th rendered revision until Follow reported it.
	queue []queuedStep
	// gates are the last rendered revision's, with their verdicts (pending until they answer);
	// revision and bundle what they judge.
	gates    []events.GateVerdict
	revision int
	bundle   string
	// diffed are the verdicts a dry run's release.diffed reports.
	diffed  []events.GateVerdict
	stopped bool
}

type queuedStep struct {
	rendered int
	step     flow.Step
}

// watchGates starts a gateWatch of the flow corr starts, reading w. stop ends it.
func watchGates(ctx context.Context, w *flow.Watcher, corr string) (g *gateWatch, stop func()) {
	g = &gateWatch{changed: make(chan struct{}), flows: map[string]bool{corr: true}, failed: map[string]bool{}}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer g.update(func() { g.stopped = true })
		for {
			e, err := w.Next(ctx)
			if err != nil {
				return
			}
			g.update(func() { g.fold(e) })
		}
	}()
	return g, func() { cancel(); <-done }
}

// update changes the watch under its lock and wakes whoever waits for a change.
func (g *gateWatch) update(f func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f()
	close(g.changed)
	g.changed = make(chan struct{})
}

// fold reads one event of the release, in stream order.
func (g *gateWatch) fold(e event.Event) {
	corr := events.CorrelationID(e)
	if (e.Type() == events.TypeRollbackRequested || e.Type() == events.TypeUninstallRequested) && g.failed[events.CausationID(e)] {
		g.flows[e.ID()] = true // the automatic rollback of a failure, as Follow follows it
		g.past = true
		return
	}
	if !g.flows[corr] {
		return
	}
	switch e.Type() {
	case events.TypeRendered:
		r, err := events.Data[events.Rendered](e)
		if err != nil {
			return
		}
		g.read++
		g.past = false
		g.revision, g.bundle, g.gates = events.Revision(e), r.Bundle, nil
		for _, gate := range r.Gates {
			g.gates = append(g.gates, events.GateVerdict{Gate: gate, Verdict: events.VerdictPending})
		}
		if len(g.gates) > 0 {
			g.say("waiting for approval by %s", strings.Join(r.Gates, ", "))
		}
	case events.TypeApproved, events.TypeRejected:
		g.verdict(e)
	case events.TypeFailed:
		g.failed[e.ID()] = true
		g.past = true
	case events.TypeDiffed:
		if d, err := events.Data[events.Diffed](e); err == nil {
			g.diffed = d.Gates
		}
		g.past = true
	case events.TypeRequested, events.TypeRollbackRequested:
	default:
		g.past = true
	}
}

// verdict reads a gate's verdict on the last rendered revision: one for another revision or
// bundle, or of a gate it does not wait for, is none (as the applier counts them).
func (g *gateWatch) verdict(e event.Event) {
	var v *events.Verdict
	if e.Type() == events.TypeApproved {
		a, err := events.Data[events.Approved](e)
		if err != nil {
			return
		}
		v = (*events.Verdict)(a)
	} else {
		r, err := events.Data[events.Rejected](e)
		if err != nil {
			return
		}
		v = (*events.Verdict)(r)
	}
	i := slices.IndexFunc(g.gates, func(gv events.GateVerdict) bool { return gv.Gate == v.Gate })
	if i < 0 || v.Revision != g.revision || v.Bundle != g.bundle {
		return
	}
	verdict := events.VerdictApproved
	if e.Type() == events.TypeRejected {
		verdict = events.VerdictRejected
	}
	gv := events.GateVerdict{Gate: v.Gate, Verdict: verdict, Reason: v.Reason, Message: v.Message, Findings: v.Findings, By: v.By}
	if prev := g.gates[i]; prev.Verdict == gv.Verdict && prev.Message == gv.Message {
		return // said again
	}
	g.gates[i] = gv
	by := ""
	if v.By != "" {
		by = " (" + v.By + ")"
	}
	if verdict == events.VerdictRejected {
		g.say("rejected by %s%s: %s", v.Gate, by, firstLine(v.Message))
		for _, f := range v.Findings {
			what := f.Rule
			if f.Object != nil {
				what = f.Object.String()
			}
			g.say("  %s: %s", what, f.Message)
		}
		return
	}
	text := fmt.Sprintf("approved by %s%s", v.Gate, by)
	if v.Message != "" {
		text += ": " + firstLine(v.Message)
	}
	if p := g.pending(); len(p) > 0 {
		text += "; waiting for approval by " + strings.Join(p, ", ")
	}
	g.say("%s", text)
}

// pending are the gates of the last rendered revision that have not answered.
func (g *gateWatch) pending() []string {
	var out []string
	for _, gv := range g.gates {
		if gv.Verdict == events.VerdictPending {
			out = append(out, gv.Gate)
		}
	}
	return out
}

// say queues a line about the last rendered revision.
func (g *gateWatch) say(format string, args ...any) {
	g.queue = append(g.queue, queuedStep{g.read, flow.Step{Stage: stageGate, Text: fmt.Sprintf(format, args...)}})
}

// flush prints the queued lines about revisions Follow reported rendered. Under g.mu.
func (g *gateWatch) flush(print func(flow.Step)) {
	n := 0
	for _, q := range g.queue {
		if q.rendered > g.shown {
			break
		}
		s := q.step
		if strings.HasPrefix(s.Text, "  ") {
			s.Stage = "" // a finding: goes on the line before
		}
		print(s)
		n++
	}
	g.queue = g.queue[n:]
}

// step prints Follow's step s in its place among the gates' lines: a step after the gates' (what
// the applier did next, a failure) waits, a little, for the watch to have read as far, so that
// the verdicts it follows are said first.
func (g *gateWatch) step(s flow.Step, print func(flow.Step)) {
	switch s.Stage {
	case "rendered", "", "waiting":
	default:
		g.waitPast(2 * time.Second)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch s.Stage {
	case "rendered":
		print(s)
		g.shown++
	case "waiting":
		// Follow's hint names the applier after release.rendered; the gates are what it waits for.
		if p := g.pending(); len(p) > 0 && g.read == g.shown && !g.past {
			s.Text = "still waiting for approval by " + strings.Join(p, ", ")
		}
		g.flush(print)
		print(s)
	default:
		g.flush(print)
		print(s)
	}
	g.flush(print)
	// Released, the watch prints what it reads as it comes: wake it.
	close(g.changed)
	g.changed = make(chan struct{})
}

// waitPast waits until the watch read every rendered revision Follow reported and something
// after its verdicts, or for at most d.
func (g *gateWatch) waitPast(d time.Duration) {
	timeout := time.After(d)
	for {
		g.mu.Lock()
		ok := g.stopped || g.read >= g.shown && g.past
		changed := g.changed
		g.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			return
		}
	}
}

// run prints the watch's lines as it reads them, once Follow reported their revision rendered,
// until ctx ends.
func (g *gateWatch) run(ctx context.Context, print func(flow.Step)) {
	for {
		g.mu.Lock()
		g.flush(print)
		changed := g.changed
		g.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}

// verdicts are the gates of the flow's last rendered revision with their verdicts (pending ones
// too), or, for a dry run, what its release.diffed reports.
func (g *gateWatch) verdicts() []events.GateVerdict {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.diffed != nil {
		return slices.Clone(g.diffed)
	}
	return slices.Clone(g.gates)
}
