package history

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/flow"
)

// WatchdogName is the deadline watchdog's name: its durable consumer, its $SRV name, and the
// source troupe/deadlines of the release.failed it publishes.
const WatchdogName = "deadlines"

// ReasonDeadlineExceeded is the reason of the release.failed the watchdog publishes.
const ReasonDeadlineExceeded = "deadline_exceeded"

// DefaultGrace is how long past a flow's deadline the watchdog waits before it ends the flow:
// time for the stage that holds the flow to publish its own, more precise failure (the health
// watcher's timeout at the deadline, the applier's), and room for clocks that differ a little.
const DefaultGrace = 10 * time.Second

// WatchdogOptions configure the Watchdog.
type WatchdogOptions struct {
	Names events.Names
	// Grace is how long past a deadline the watchdog waits. Default DefaultGrace.
	Grace time.Duration
	// Subscriber tunes the consumer; Service, Types, Produces, DeliverAll, Logger and Metrics
	// are set by NewWatchdog.
	Subscriber events.SubscriberConfig
	Version    string
	Logger     *zerolog.Logger
	Metrics    *events.Metrics
	// Now is the clock; tests move it. Default time.Now.
	Now func() time.Time
}

// Watchdog is the deadline owner of rule 4: it ends every flow that has no terminal event by its
// deadline (request time + timeout) with exactly one release.failed, reason deadline_exceeded,
// naming the stage and the service that did not answer.
//
// It keeps no state of its own. Its consumer folds every event into the flow's record in the
// KVFlows bucket (events.Flows.Observe: the request and the end; a step in between writes
// nothing); every replica watches that bucket, and when an open flow's deadline is Grace past,
// reads the flow's events from the stream (events.Names.FlowSteps) — a terminal event there
// ends it (a record may lag its events), else its last step names who did not answer — and
// publishes the failure. Terminal events are claimed in the record by
// compare-and-set before they are published (events.Publisher), so whichever replica — or the
// stage itself, finishing late — gets there first ends the flow and the others publish
// nothing; its id is derived from the flow, so replicas build the same event. A claim whose
// event never reached the stream (its publisher died between the two) is published by the
// watchdog as it was claimed. Any number of replicas is safe, and a restarted one resumes from
// the bucket.
type Watchdog struct {
	opts      WatchdogOptions
	js        jetstream.JetStream
	flows     *events.Flows
	pub       *events.Publisher
	revisions *events.Revisions
	stream    jetstream.Stream
	sub       *events.Subscriber
	log       zerolog.Logger

	mu      sync.Mutex
	open    map[string]*events.Flow // flows not ended, or claimed but not seen in the stream
	watched chan struct{}           // closed once the bucket's records were read
	once    sync.Once

	readyOnce sync.Once
	ready     <-chan struct{}
}

// NewWatchdog opens the flows bucket and the stream of o.Names.
func NewWatchdog(ctx context.Context, js jetstream.JetStream, o WatchdogOptions) (*Watchdog, error) {
	if o.Grace <= 0 {
		o.Grace = DefaultGrace
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	w := &Watchdog{opts: o, js: js, pub: events.NewPublisher(js, o.Names), open: map[string]*events.Flow{}, watched: make(chan struct{})}
	if o.Logger != nil {
		w.log = o.Logger.With().Str("service", WatchdogName).Logger()
	} else {
		w.log = zerolog.Nop()
	}
	var err error
	if w.flows, err = events.NewFlows(ctx, js, o.Names); err != nil {
		return nil, err
	}
	if w.revisions, err = events.NewRevisions(ctx, js, o.Names); err != nil {
		return nil, err
	}
	if w.stream, err = js.Stream(ctx, o.Names.Stream()); err != nil {
		return nil, fmt.Errorf("deadlines: stream %s: %w", o.Names.Stream(), err)
	}
	sc := o.Subscriber
	sc.Service, sc.Version, sc.Names = WatchdogName, o.Version, o.Names
	sc.Types = events.Types()
	sc.Produces = []string{events.TypeFailed}
	// From the stream's start: a flow requested before the first watchdog ran is watched too;
	// the deadline of what is long over is checked against the stream before anything is sent.
	sc.DeliverAll, sc.Logger, sc.Metrics = true, o.Logger, o.Metrics
	if w.sub, err = events.NewSubscriber(js, sc, w.observe); err != nil {
		return nil, err
	}
	return w, nil
}

// Ready is closed once the watchdog receives events and has read the open flows.
func (w *Watchdog) Ready() <-chan struct{} {
	w.readyOnce.Do(func() { w.ready = both(w.sub.Ready(), w.watched) })
	return w.ready
}

// Start observes events and ends late flows until ctx ends.
func (w *Watchdog) Start(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	go func() { errc <- w.sub.Start(ctx) }()
	go func() { errc <- w.watch(ctx) }()
	err := <-errc
	cancel()
	if err2 := <-errc; err == nil {
		err = err2
	}
	return err
}

// observe folds one event into its flow's record. Flows long over (past the bucket's
// retention) are not recorded again.
func (w *Watchdog) observe(ctx context.Context, e event.Event) error {
	if d := events.FlowDeadline(e); !d.IsZero() && w.opts.Now().Sub(d) > events.FlowRetention {
		return nil
	}
	d, _ := events.DeliveryFrom(ctx)
	_, err := w.flows.Observe(ctx, e, d.Sequence)
	return err
}

// watch keeps the open flows from the bucket and ends those past their deadline.
func (w *Watchdog) watch(ctx context.Context) error {
	kw, err := w.flows.KV().WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("%s: watch flows: %w", WatchdogName, err)
	}
	defer func() { _ = kw.Stop() }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case entry, ok := <-kw.Updates():
			if !ok {
				return fmt.Errorf("%s: flows watch ended", WatchdogName)
			}
			if entry == nil { // every record read: from now on, updates
				w.once.Do(func() { close(w.watched) })
				w.expire(ctx)
				continue
			}
			w.track(entry)
		case <-tick.C:
			w.expire(ctx)
		}
	}
}

func (w *Watchdog) track(entry jetstream.KeyValueEntry) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if entry.Operation() != jetstream.KeyValuePut {
		delete(w.open, entry.Key())
		return
	}
	var fl events.Flow
	if err := json.Unmarshal(entry.Value(), &fl); err != nil {
		w.log.Warn().Err(err).Str("key", entry.Key()).Msg("unreadable flow record")
		return
	}
	if fl.End != nil && fl.End.Stored {
		delete(w.open, entry.Key())
		return
	}
	w.open[entry.Key()] = &fl
}

// due returns the flows whose deadline, plus grace, has passed.
func (w *Watchdog) due(now time.Time) []*events.Flow {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []*events.Flow
	for _, fl := range w.open {
		if late(fl, now, w.opts.Grace) {
			out = append(out, fl)
		}
	}
	return out
}

// late reports whether the watchdog must act on fl at now: an open flow Grace past its deadline,
// or a terminal event claimed Grace ago (and past the deadline) that the stream still has not
// shown.
func late(fl *events.Flow, now time.Time, grace time.Duration) bool {
	deadline := fl.Deadline
	if deadline.IsZero() {
		if fl.Requested.IsZero() {
			return false // nothing says when it started: not a flow any stage will end
		}
		deadline = fl.Requested.Add(events.DefaultTimeout)
	}
	if fl.End != nil {
		if fl.End.Stored {
			return false
		}
		deadline = maxTime(deadline, fl.End.Time)
	}
	return now.After(deadline.Add(grace))
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func (w *Watchdog) expire(ctx context.Context) {
	for _, fl := range w.due(w.opts.Now()) {
		if ctx.Err() != nil {
			return
		}
		if err := w.end(ctx, fl); err != nil {
			w.log.Warn().Err(err).Str("release", fl.Release).Str("correlation_id", fl.Correlation).Msg("ending a late flow; trying again")
		}
	}
}

// end ends the late flow fl: the terminal event already in the stream when there is one (the
// record only lagged), else the claimed one, else release.failed deadline_exceeded.
func (w *Watchdog) end(ctx context.Context, fl *events.Flow) error {
	rel, err := events.ParseRelease(fl.Release)
	if err != nil {
		return err
	}
	last, stored, err := w.opts.Names.FlowSteps(ctx, w.js, rel, fl)
	if err != nil {
		return err
	}
	if stored != nil {
		_, err := w.flows.Observe(ctx, *stored, 0)
		return err
	}
	if fl.End != nil && len(fl.End.Event) > 0 {
		subject, err := w.opts.Names.Subject(rel, fl.End.Type)
		if err != nil {
			return err
		}
		msg := nats.NewMsg(subject)
		msg.Header.Set("Content-Type", events.ContentTypeStructured)
		msg.Data = fl.End.Event
		w.log.Info().Str("release", fl.Release).Str("event_id", fl.End.ID).Str("type", fl.End.Type).
			Msg("publishing a terminal event its publisher claimed but did not publish")
		ack, err := w.js.PublishMsg(ctx, msg, jetstream.WithMsgID(fl.End.ID))
		if err != nil {
			return err
		}
		// The watchdog's own release.failed whose publish failed after its claim (a NATS timeout,
		// a restart): counted now, when it is stored, once.
		if fl.End.Source == events.SourcePrefix+WatchdogName && fl.End.Type == events.TypeFailed && !ack.Duplicate {
			if e, err := w.opts.Names.Decode(subject, msg.Header, fl.End.Event); err == nil {
				if f, err := events.Data[events.Failed](e); err == nil {
					w.opts.Metrics.DeadlineExceeded(WatchdogName, f.Stage)
				}
			}
		}
		return nil
	}
	out, err := w.failure(ctx, rel, fl, last)
	if err != nil {
		return err
	}
	ack, err := w.pub.Publish(ctx, out)
	switch {
	case errors.Is(err, events.ErrFlowEnded):
		return nil // another replica, or the stage itself, ended it first
	case err != nil:
		return err
	}
	f := mustFailed(out)
	if !ack.Duplicate { // stored now, not by another replica (or an earlier try) first: counted once
		w.opts.Metrics.DeadlineExceeded(WatchdogName, f.Stage)
	}
	w.log.Warn().Str("release", fl.Release).Int("revision", events.Revision(out)).Str("correlation_id", fl.Correlation).
		Msg("deadline exceeded: " + events.Truncate(f.Message, 200))
	return nil
}

// failure builds the release.failed that ends fl: caused by last, the last event the flow
// reached (nil: only its request, or not even that, is known), with an id derived from the flow,
// so every replica builds the same one.
func (w *Watchdog) failure(ctx context.Context, rel events.Release, fl *events.Flow, last *event.Event) (event.Event, error) {
	revision := fl.Revision
	if revision == 0 && last != nil {
		revision = events.Revision(*last)
	}
	if revision == 0 && fl.Start == events.TypeRequested && fl.Sequence > 0 {
		n, err := w.revisions.Of(ctx, rel, fl.Sequence)
		if err != nil {
			return event.Event{}, err
		}
		revision = n
	}
	cause := event.New()
	cause.SetSubject(rel.String())
	cause.SetID(fl.Correlation)
	cause.SetType(cmpOr(fl.Start, events.TypeRequested))
	cause.SetTime(fl.Requested)
	lastType := fl.Start
	if last != nil {
		lastType = last.Type()
		cause.SetID(last.ID())
		cause.SetType(last.Type())
		for _, ext := range []string{events.ExtTraceParent, events.ExtTraceState} {
			if v, ok := last.Extensions()[ext]; ok {
				cause.SetExtension(ext, v)
			}
		}
	}
	cause.SetExtension(events.ExtCorrelationID, fl.Correlation)
	if !fl.Requested.IsZero() {
		cause.SetExtension(events.ExtRequestTime, fl.Requested.UTC().Format(time.RFC3339Nano))
	}
	deadline := fl.Deadline
	if deadline.IsZero() {
		deadline = fl.Requested.Add(events.DefaultTimeout)
	}
	cause.SetExtension(events.ExtDeadline, deadline.UTC().Format(time.RFC3339Nano))
	if revision > 0 {
		cause.SetExtension(events.ExtRevision, revision)
	}
	stage, message := overdue(fl, lastType, deadline)
	if silent, gated, err := w.silentGates(ctx, rel, fl, lastType); err != nil {
		return event.Event{}, err
	} else if len(silent) > 0 {
		stage = events.StageGate
		message = fmt.Sprintf("deadline %s passed waiting for gate %s: no verdict on revision %d (bundle %s), which waits for %s",
			deadline.UTC().Format(time.RFC3339), strings.Join(silent, ", "), revision, gated.Bundle, strings.Join(gated.Gates, ", "))
	}
	out, err := events.Derive(cause, events.SourcePrefix+WatchdogName, events.TypeFailed,
		events.Failed{Stage: stage, Reason: ReasonDeadlineExceeded, Message: message})
	if err != nil {
		return event.Event{}, err
	}
	return out, nil // its id derives from the flow's correlation id and this source: every replica's is the same
}

// silentGates returns the gates that gave no verdict on fl's revision, when it waits for gates
// (its last event, of type lastType, is its release.rendered or a verdict), with its
// release.rendered's payload, Gates holding every gate it needs (the applier's: those it names,
// and its request's).
func (w *Watchdog) silentGates(ctx context.Context, rel events.Release, fl *events.Flow, lastType string) ([]string, *events.Rendered, error) {
	switch lastType {
	case events.TypeRendered, events.TypeApproved, events.TypeRejected:
	default:
		return nil, nil, nil
	}
	subject, err := w.opts.Names.Subject(rel, events.TypeRendered)
	if err != nil {
		return nil, nil, err
	}
	// The flow's release.rendered: the release's newest, or one after the flow's request.
	m, err := w.stream.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	e, err := w.opts.Names.Decode(m.Subject, m.Header, m.Data)
	if err != nil || flowID(e) != fl.Correlation {
		if m, e, err = w.findRendered(ctx, subject, fl); m == nil || err != nil {
			return nil, nil, err
		}
	}
	r, err := events.Data[events.Rendered](e)
	if err != nil {
		return nil, nil, nil
	}
	needs := *r
	needs.Gates = events.RequiredGates(append(slices.Clone(r.Gates), r.Options.Gates...), nil)
	if len(needs.Gates) == 0 {
		return nil, nil, nil
	}
	verdicts, err := w.opts.Names.GateVerdicts(ctx, w.stream, rel, m.Sequence, fl.Correlation, events.Revision(e), r.Bundle, needs.Gates)
	if err != nil {
		return nil, nil, err
	}
	return events.Pending(needs.Gates, verdicts), &needs, nil
}

// findRendered walks the release's release.rendered events from the flow's request on for the
// flow's; nil when there is none.
func (w *Watchdog) findRendered(ctx context.Context, subject string, fl *events.Flow) (*jetstream.RawStreamMsg, event.Event, error) {
	for seq := max(fl.Sequence, 1); ; {
		m, err := w.stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, event.Event{}, nil
		}
		if err != nil {
			return nil, event.Event{}, err
		}
		if e, err := w.opts.Names.Decode(m.Subject, m.Header, m.Data); err == nil && flowID(e) == fl.Correlation {
			return m, e, nil
		}
		seq = m.Sequence + 1
	}
}

// overdue names the stage that did not answer fl, whose last event was of type lastType, and
// says so for a person.
func overdue(fl *events.Flow, lastType string, deadline time.Time) (stage, message string) {
	next, service := flow.WaitsFor(lastType)
	stage = stageAfter(lastType)
	took := ""
	if !fl.Requested.IsZero() {
		took = fmt.Sprintf(" (%s after the request)", deadline.Sub(fl.Requested).Round(time.Second))
	}
	switch {
	case service != "":
		message = fmt.Sprintf("deadline %s%s passed with no %s after %s: the %s did not answer in time",
			deadline.UTC().Format(time.RFC3339), took, next, cmpOr(lastType, "the request"), service)
	default:
		message = fmt.Sprintf("deadline %s%s passed with no terminal event after %s",
			deadline.UTC().Format(time.RFC3339), took, cmpOr(lastType, "the request"))
	}
	return stage, message
}

// stageAfter is the stage that answers an event of type last.
func stageAfter(last string) string {
	switch last {
	case "", events.TypeRequested:
		return events.StageRender
	case events.TypeRendered, events.TypeHooked, events.TypeApproved, events.TypeRejected:
		return events.StageApply
	case events.TypeApplied, events.TypeProgressing:
		return events.StageHealth
	case events.TypeSettled:
		return events.StageHook
	case events.TypeRollbackRequested:
		return events.StageRollback
	case events.TypeUninstallRequested:
		return events.StageUninstall
	}
	return events.StageRequest
}

func flowID(e event.Event) string {
	if c := events.CorrelationID(e); c != "" {
		return c
	}
	return e.ID()
}

func mustFailed(e event.Event) events.Failed {
	f, err := events.Data[events.Failed](e)
	if err != nil {
		return events.Failed{}
	}
	return *f
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
