package events

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
)

// KVFlows holds one record per flow (a request and every event that reacts to it, by
// correlation id): its request, its deadline, and the terminal event that ended it. The steps in
// between are the stream's alone (a write per step, and its delivery to every replica watching
// the bucket, for what is read only when a deadline passes or a person decides on a gate:
// FlowSteps reads them then).
// The record is what makes rule 4 hold: a terminal event is claimed in it by compare-and-set
// before it is published (so a flow ends exactly once, whoever races to end it), stages fence on
// it, and the deadline watchdog reads it to end the flows nobody finished.
const KVFlows = "troupe-flows"

// FlowRetention is how long a flow's record outlives its last change: longer than any
// revision's timeout (MaxTimeout), so a record is never gone while a late stage may still ask.
const FlowRetention = 2 * MaxTimeout

// ErrFlowEnded is returned (wrapped) when a flow already has its terminal event: by Publish, for
// a terminal event other than the one that ended the flow (which is then not published), and by
// Fence. Work on an ended flow is dropped, never retried.
var ErrFlowEnded = errors.New("flow already ended")

// ErrDeadlinePassed is returned (wrapped) by Fence for an event whose flow's deadline passed:
// the deadline watchdog ends that flow, a stage must not act on it any more.
var ErrDeadlinePassed = errors.New("deadline passed")

// Flow is the record of one flow in KVFlows.
type Flow struct {
	Release     string `json:"release"`
	Correlation string `json:"correlationId"`
	// Start is the type of the request that started the flow; Sequence its stream sequence
	// (what its revision is numbered from), once the request was observed.
	Start    string `json:"start,omitempty"`
	Sequence uint64 `json:"sequence,omitempty"`
	Revision int    `json:"revision,omitempty"`
	// Requested and Deadline: when the request was made, when the flow must have ended.
	Requested time.Time `json:"requested,omitzero"`
	Deadline  time.Time `json:"deadline,omitzero"`
	// End is the terminal event that ended the flow, once claimed.
	End *FlowEnd `json:"end,omitempty"`
}

// FlowStep is one event of a flow, as the record keeps it.
type FlowStep struct {
	ID          string    `json:"id"`
	Type        string    `json:"type"`
	Source      string    `json:"source"`
	Time        time.Time `json:"time"`
	TraceParent string    `json:"traceparent,omitempty"`
}

// FlowEnd is the terminal event of a flow.
type FlowEnd struct {
	FlowStep
	// Stored is true once the event was seen in the stream (Observe); until then Event holds it
	// encoded, so that whoever finds the claim unpublished (the claimant crashed between claim
	// and publish) can publish it, as it is, with its id.
	Stored bool            `json:"stored,omitempty"`
	Event  json.RawMessage `json:"event,omitempty"`
}

// Open reports whether the flow has not ended yet.
func (f *Flow) Open() bool { return f.End == nil }

// Flows reads and writes the KVFlows bucket of a system.
type Flows struct {
	names Names
	kv    jetstream.KeyValue
}

// NewFlows opens the KVFlows bucket of names (made by Provision).
func NewFlows(ctx context.Context, js jetstream.JetStream, names Names) (*Flows, error) {
	kv, err := js.KeyValue(ctx, names.KV(KVFlows))
	if err != nil {
		return nil, fmt.Errorf("flows: kv %s: %w", names.KV(KVFlows), err)
	}
	return &Flows{names: names, kv: kv}, nil
}

// KV returns the bucket, for watching it.
func (f *Flows) KV() jetstream.KeyValue { return f.kv }

var keySafe = regexp.MustCompile(`^[-_=a-zA-Z0-9]+$`)

// FlowKey returns the key of e's flow: <namespace>.<name>.<correlation id> (a correlation id
// that is no key token, from a publisher outside troupe's SDK, by its derived UUID).
func FlowKey(e event.Event) (string, error) {
	r, err := ReleaseOf(e)
	if err != nil {
		return "", err
	}
	return flowKey(r, flowOf(e)), nil
}

func flowKey(r Release, corr string) string {
	if !keySafe.MatchString(corr) {
		corr = DeriveID(corr, "flow key")
	}
	return r.Namespace + "." + r.Name + "." + corr
}

// flowOf is e's correlation id; a request from outside the SDK may have none, and is its own.
func flowOf(e event.Event) string {
	if c := CorrelationID(e); c != "" {
		return c
	}
	return e.ID()
}

func stepOf(e event.Event) FlowStep {
	return FlowStep{ID: e.ID(), Type: e.Type(), Source: e.Source(), Time: e.Time().UTC(), TraceParent: stringExt(e, ExtTraceParent)}
}

// Get returns the record of the flow of release r with correlation id corr; nil when there is none.
func (f *Flows) Get(ctx context.Context, r Release, corr string) (*Flow, error) {
	fl, _, err := f.get(ctx, flowKey(r, corr))
	return fl, err
}

func (f *Flows) get(ctx context.Context, key string) (*Flow, uint64, error) {
	entry, err := f.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("flow %s: %w", key, err)
	}
	var fl Flow
	if err := json.Unmarshal(entry.Value(), &fl); err != nil {
		return nil, 0, fmt.Errorf("flow %s: %w", key, err)
	}
	return &fl, entry.Revision(), nil
}

// errUnchanged tells update that a change function left the record as it was.
var errUnchanged = errors.New("unchanged")

// maxCASAttempts bounds a compare-and-set loop: each lost race means another writer moved the
// record, and the change is decided again on what it wrote.
const maxCASAttempts = 20

// update applies change to the record of key (nil when there is none) and writes it by
// compare-and-set, re-reading and deciding again when another writer got there first. change
// returns errUnchanged to write nothing.
func (f *Flows) update(ctx context.Context, key string, change func(*Flow) (*Flow, error)) (*Flow, error) {
	for range maxCASAttempts {
		have, rev, err := f.get(ctx, key)
		if err != nil {
			return nil, err
		}
		want, err := change(have)
		if errors.Is(err, errUnchanged) {
			return have, nil
		}
		if err != nil {
			return have, err
		}
		b, err := json.Marshal(want)
		if err != nil {
			return nil, err
		}
		if rev == 0 {
			_, err = f.kv.Create(ctx, key, b)
		} else {
			_, err = f.kv.Update(ctx, key, b, rev)
		}
		if err == nil {
			return want, nil
		}
		if !IsCASConflict(err) {
			return nil, fmt.Errorf("flow %s: %w", key, err)
		}
	}
	return nil, fmt.Errorf("flow %s: still contended after %d attempts", key, maxCASAttempts)
}

// newFlow starts the record of e's flow from what e says.
func newFlow(e event.Event) *Flow {
	r, _ := ReleaseOf(e)
	fl := &Flow{Release: r.String(), Correlation: flowOf(e), Revision: Revision(e), Requested: RequestTime(e).UTC(), Deadline: FlowDeadline(e).UTC()}
	if fl.Requested.IsZero() && StartsFlow(e.Type()) {
		fl.Requested = e.Time().UTC()
	}
	return fl
}

// Claim records terminal event e (encoded as body) as the end of its flow, before it is
// published. It returns nil when e ends the flow — now, or already (a redelivered handler
// publishing the same event again: same id) — and an error wrapping ErrFlowEnded when another
// terminal event ended it first: e must then not be published.
func (f *Flows) Claim(ctx context.Context, e event.Event, body []byte) error {
	key, err := FlowKey(e)
	if err != nil {
		return err
	}
	_, err = f.update(ctx, key, func(have *Flow) (*Flow, error) {
		if have == nil {
			have = newFlow(e)
		}
		if have.End != nil {
			if have.End.ID != e.ID() {
				return nil, endedError(have)
			}
			if have.End.Stored || bytes.Equal(have.End.Event, body) {
				return nil, errUnchanged
			}
			end := *have.End // the same event, published again in another form (trimmed)
			end.Event = body
			have.End = &end
			return have, nil
		}
		have.End = &FlowEnd{FlowStep: stepOf(e), Event: body}
		if have.Revision == 0 {
			have.Revision = Revision(e)
		}
		return have, nil
	})
	return err
}

func endedError(fl *Flow) error {
	return fmt.Errorf("%w: %s revision %d ended with %s (%s) from %s", ErrFlowEnded, fl.Release, fl.Revision, fl.End.Type, fl.End.ID, fl.End.Source)
}

// Fence tells a stage whether it may still act on e at now: an error wrapping ErrDeadlinePassed
// when e's flow's deadline passed, or ErrFlowEnded when the flow already ended (with another
// terminal event than e itself). A stage checks before it changes anything (the applier before
// touching the cluster, and between its stages) and drops the work on either error: the flow
// has, or will get from the deadline watchdog, its one terminal event.
func (f *Flows) Fence(ctx context.Context, e event.Event, now time.Time) error {
	if d := FlowDeadline(e); !d.IsZero() && now.After(d) {
		r, _ := ReleaseOf(e)
		return fmt.Errorf("%w: %s revision %d: deadline %s was %s ago", ErrDeadlinePassed, r, Revision(e),
			d.UTC().Format(time.RFC3339), now.Sub(d).Round(time.Millisecond))
	}
	key, err := FlowKey(e)
	if err != nil {
		return err
	}
	fl, _, err := f.get(ctx, key)
	if err != nil {
		return err
	}
	if fl != nil && fl.End != nil && fl.End.ID != e.ID() {
		return endedError(fl)
	}
	return nil
}

// Observe folds e, read from the stream at sequence seq, into its flow's record: the request's
// sequence and deadline, and the terminal event (marked stored; a terminal event published
// without a claim, by a publisher outside the SDK, ends the flow here). A step in between writes
// nothing once the record has them (the revision is filled in when something else is written).
// It returns the record as written. Observing the same event twice changes nothing.
func (f *Flows) Observe(ctx context.Context, e event.Event, seq uint64) (*Flow, error) {
	key, err := FlowKey(e)
	if err != nil {
		return nil, err
	}
	return f.update(ctx, key, func(have *Flow) (*Flow, error) {
		fl := have
		if fl == nil {
			fl = newFlow(e)
		} else {
			c := *fl
			fl = &c
		}
		changed := have == nil
		if StartsFlow(e.Type()) && fl.Start == "" {
			fl.Start, fl.Sequence, changed = e.Type(), seq, true
		}
		if fl.Deadline.IsZero() {
			if d := FlowDeadline(e); !d.IsZero() {
				fl.Deadline, changed = d.UTC(), true
			}
		}
		switch {
		case EndsFlow(e.Type()) && fl.End == nil:
			fl.End, changed = &FlowEnd{FlowStep: stepOf(e), Stored: true}, true
		case EndsFlow(e.Type()) && fl.End.ID == e.ID() && !fl.End.Stored:
			end := *fl.End
			end.Stored, end.Event = true, nil
			fl.End, changed = &end, true
		}
		if !changed {
			return nil, errUnchanged
		}
		if n := Revision(e); n > 0 && fl.Revision == 0 {
			fl.Revision = n
		}
		return fl, nil
	})
}

// FlowSteps reads the steps of flow fl of release r from the stream, from its request on (or,
// its sequence unknown, from a minute before it was requested): the newest that is not terminal
// (what the flow waits on from there) and its terminal event; either nil when there is none.
// Progress reports are no steps (release.progressing says what release.applied said: the health
// watcher has it; there may be many, each as long as the release's objects), and neither are a
// ready release's degradations: they are not read. It reads with one ordered consumer that
// tries one reset, not nats.go's endless ones: a read that fails (a node lost) is an error, for
// the caller to try again.
func (n Names) FlowSteps(ctx context.Context, js jetstream.JetStream, r Release, fl *Flow) (last, end *event.Event, err error) {
	if err := r.Validate(); err != nil {
		return nil, nil, err
	}
	var subjects []string
	for _, spec := range catalog {
		switch spec.Type {
		case TypeProgressing, TypeDegraded, TypeRecovered:
			continue
		}
		ev, err := subjectEvent(spec.Type)
		if err != nil {
			return nil, nil, err
		}
		subject := n.releasePrefix() + r.Namespace + "." + r.Name + "." + ev
		if IsVerdict(spec.Type) {
			subject += ".*" // every gate's
		}
		subjects = append(subjects, subject)
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: subjects, MaxResetAttempts: 1}
	switch {
	case fl.Sequence > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, fl.Sequence
	case !fl.Requested.IsZero():
		start := fl.Requested.Add(-time.Minute) // clocks differ a little
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &start
	}
	cons, err := js.OrderedConsumer(ctx, n.Stream(), cfg)
	if err != nil {
		return nil, nil, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, nil, err
	}
	if info.NumPending == 0 {
		return nil, nil, nil
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, nil, err
	}
	defer it.Stop()
	for {
		msg, err := it.Next(jetstream.NextMaxWait(5 * time.Second))
		if err != nil {
			return nil, nil, fmt.Errorf("read the events of %s: %w", r, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return nil, nil, err
		}
		if e, err := n.Decode(msg.Subject(), msg.Headers(), msg.Data()); err == nil && flowOf(e) == fl.Correlation {
			if EndsFlow(e.Type()) {
				return last, &e, nil
			}
			last = &e
		}
		if md.NumPending == 0 {
			return last, nil, nil
		}
	}
}
