package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// GateRequest is what a gate judges: one rendered revision of a release, and its bundle.
type GateRequest struct {
	Release  Release
	Revision int
	// Rendered is the release.rendered event's payload (Bundle is its digest); Event the event.
	Rendered *Rendered
	Event    event.Event
	// Bundle is the bundle Rendered.Bundle names, read from the bundles object store.
	Bundle *Bundle
	// DryRun: the requester only asked what would happen; the verdict is reported, and a
	// rejection fails nothing. Rollback: an earlier revision's bundle again.
	DryRun, Rollback bool
}

// Judgement is a gate's answer to a GateRequest.
type Judgement struct {
	// Approve: the revision may be applied. Otherwise it is rejected, and Message says why.
	Approve bool
	// Wait publishes nothing now: the gate decides later (a person, through GateDecide).
	Wait     bool
	Reason   string
	Message  string
	Findings []Finding
	By       string
}

// GateConfig configures a Gate.
type GateConfig struct {
	// Name is the gate's name, a DNS-1123 label: what requests (Options.Gates) and policies
	// (GatePolicy) name, and its verdicts' subjects end in. Its service and durable consumer
	// are gate-<Name>.
	Name string
	// Judge judges a revision that names the gate. An error is retried as any handler's; a
	// Terminal one, or the last retry's, dead-letters the revision's release.rendered for the
	// gate: it gives no verdict, and the revision waits for one until its deadline. A gate
	// publishes nothing but its verdicts (its identity may publish nothing else): never a
	// release.failed, whatever the error's Stage or Subscriber.FailStage say.
	Judge func(ctx context.Context, req GateRequest) (Judgement, error)
	// Decisions, when set, makes the gate take decisions a person asks of it
	// (Names.GateDecisionSubject: `troupe approve`, `troupe reject`): the gate a person drives.
	// It is called before the verdict is published, and may refuse the decision with an error.
	Decisions func(ctx context.Context, req GateRequest, d GateDecision) error
	// Subscriber tunes the gate's consumer; Service, Types, Produces, Names and Logger are set,
	// FailStage is cleared.
	Subscriber SubscriberConfig
	Names      Names
	Logger     *zerolog.Logger
}

// Gate is the SDK of a gate: a subscriber to release.rendered that judges each revision naming
// it and publishes its verdict on its own subject. A gate joins the choreography as any
// subscriber does; the applier, waiting for the verdicts a revision needs, does the rest.
type Gate struct {
	cfg     GateConfig
	js      jetstream.JetStream
	pub     *Publisher
	bundles *Objects
	flows   *Flows
	stream  jetstream.Stream
	sub     *Subscriber
	source  string
}

// NewGate returns the gate cfg describes, ready to Start.
func NewGate(ctx context.Context, js jetstream.JetStream, cfg GateConfig) (*Gate, error) {
	if err := ValidateName("gate", cfg.Name); err != nil {
		return nil, err
	}
	if cfg.Judge == nil {
		return nil, fmt.Errorf("gate %s: no Judge", cfg.Name)
	}
	service := "gate-" + cfg.Name
	g := &Gate{cfg: cfg, js: js, pub: NewPublisher(js, cfg.Names), source: SourcePrefix + service}
	var err error
	if g.bundles, err = OpenObjects(ctx, js, cfg.Names.Objects(BucketBundles)); err != nil {
		return nil, err
	}
	if g.flows, err = NewFlows(ctx, js, cfg.Names); err != nil {
		return nil, err
	}
	if g.stream, err = js.Stream(ctx, cfg.Names.Stream()); err != nil {
		return nil, fmt.Errorf("gate %s: stream %s: %w", cfg.Name, cfg.Names.Stream(), err)
	}
	sc := cfg.Subscriber
	sc.Service, sc.Names, sc.Logger = service, cfg.Names, cfg.Logger
	sc.Types = []string{TypeRendered}
	sc.Produces = []string{TypeApproved, TypeRejected}
	sc.FailStage = "" // a gate publishes its verdicts only: Judge
	// From the stream's start: a gate deployed after `troupe gate require` (revisions rendered
	// before it ran wait for it) judges those still open; the fence drops the ones that ended.
	sc.DeliverAll = true
	if g.sub, err = NewSubscriber(js, sc, g.handle); err != nil {
		return nil, err
	}
	return g, nil
}

// Start judges revisions (and, with Decisions, takes decisions) until ctx ends.
func (g *Gate) Start(ctx context.Context) error {
	if g.cfg.Decisions != nil {
		sub, err := g.js.Conn().QueueSubscribe(g.cfg.Names.GateDecisionSubject(g.cfg.Name), "gate-"+g.cfg.Name, func(m *nats.Msg) {
			reply := g.decide(ctx, m.Data)
			b, _ := json.Marshal(reply)
			_ = m.Respond(b)
		})
		if err != nil {
			return fmt.Errorf("gate %s: decisions: %w", g.cfg.Name, err)
		}
		defer func() { _ = sub.Unsubscribe() }()
	}
	return g.sub.Start(ctx)
}

// Ready is closed once the gate receives events.
func (g *Gate) Ready() <-chan struct{} { return g.sub.Ready() }

// Receiving reports whether the gate receives events now.
func (g *Gate) Receiving() bool { return g.sub.Receiving() }

func (g *Gate) handle(ctx context.Context, e event.Event) error {
	r, err := Data[Rendered](e)
	if err != nil {
		return Terminal(err)
	}
	if !slices.Contains(r.Gates, g.cfg.Name) {
		return nil // not asked
	}
	if err := g.flows.Fence(ctx, e, time.Now()); errors.Is(err, ErrFlowEnded) || errors.Is(err, ErrDeadlinePassed) {
		return nil // the revision ended, or its deadline passed: nobody waits for the verdict
	} else if err != nil {
		return err
	}
	req, err := g.request(ctx, e, r)
	if err != nil {
		return err
	}
	j, err := g.cfg.Judge(ctx, req)
	if err != nil {
		return withoutStage(err)
	}
	if j.Wait {
		return nil
	}
	return g.publish(ctx, e, r, j)
}

// withoutStage is err with no stage: a gate publishes no release.failed (its identity may not,
// and the subscriber would retry the event for ever, failing to), so a Judge's error is retried
// or dead-lettered only.
func withoutStage(err error) error {
	e, ok := errors.AsType[*Error](err)
	if !ok || e.Stage == "" {
		return err
	}
	c := *e
	c.Stage, c.Message, c.Err = "", err.Error(), err
	return &c
}

// request reads the bundle of a rendered revision.
func (g *Gate) request(ctx context.Context, e event.Event, r *Rendered) (GateRequest, error) {
	rel, err := ReleaseOf(e)
	if err != nil {
		return GateRequest{}, Terminal(err)
	}
	rc, err := g.bundles.Get(ctx, r.Bundle)
	if errors.Is(err, ErrNotFound) {
		return GateRequest{}, Terminalf("bundle %s is not in the bundles object store", r.Bundle)
	}
	if err != nil {
		return GateRequest{}, fmt.Errorf("bundle %s: %w", r.Bundle, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return GateRequest{}, fmt.Errorf("bundle %s: %w", r.Bundle, err)
	}
	b, err := ReadBundle(data)
	if err != nil {
		return GateRequest{}, Terminal(fmt.Errorf("bundle %s: %w", r.Bundle, err))
	}
	return GateRequest{Release: rel, Revision: Revision(e), Rendered: r, Event: e, Bundle: b,
		DryRun: r.Options.DryRun, Rollback: r.Rollback}, nil
}

// publish publishes j as the gate's verdict on the revision e rendered. Its id derives from the
// flow, the verdict and key, so judging a redelivery again publishes the same event, dropped.
// A person's decision has a key of its own: deciding again (rejecting what was approved) is a
// new verdict, the last of which counts, not a duplicate the stream would drop.
func (g *Gate) publish(ctx context.Context, e event.Event, r *Rendered, j Judgement, key ...string) error {
	v := Verdict{Gate: g.cfg.Name, Revision: Revision(e), Bundle: r.Bundle, Reason: j.Reason, Message: Truncate(j.Message, MaxMessageLength),
		Findings: boundFindings(j.Findings), By: j.By, DryRun: r.Options.DryRun}
	if n := len(j.Findings) - len(v.Findings); n > 0 {
		v.Message = Truncate(fmt.Sprintf("%s (and %d more findings)", v.Message, n), MaxMessageLength)
	}
	typ := TypeApproved
	var data any = Approved(v)
	if !j.Approve {
		typ, data = TypeRejected, Rejected(v)
		if v.Message == "" {
			return Terminalf("gate %s rejected revision %d without a message", g.cfg.Name, v.Revision)
		}
	}
	out, err := Derive(e, g.source, typ, data, key...)
	if err != nil {
		return Terminal(err)
	}
	_, err = g.pub.Publish(ctx, out)
	return err
}

// Bounds of one verdict's findings, so that it always fits an event (MaxDataSize).
const (
	maxVerdictFindings       = 200
	maxVerdictFindingMessage = 1 << 10
)

// boundFindings returns at most maxVerdictFindings of fs, their messages cut to
// maxVerdictFindingMessage.
func boundFindings(fs []Finding) []Finding {
	out := make([]Finding, 0, min(len(fs), maxVerdictFindings))
	for i, f := range fs {
		if i == maxVerdictFindings {
			break
		}
		f.Message = Truncate(f.Message, maxVerdictFindingMessage)
		out = append(out, f)
	}
	return out
}

// decide takes a person's decision: it finds the release's newest revision that names the gate
// (or the one asked for), still open, and publishes the verdict on it.
func (g *Gate) decide(ctx context.Context, data []byte) GateDecisionReply {
	fail := func(format string, args ...any) GateDecisionReply {
		return GateDecisionReply{Error: fmt.Sprintf(format, args...)}
	}
	var d GateDecision
	if err := json.Unmarshal(data, &d); err != nil {
		return fail("a decision is JSON: %v", err)
	}
	d.Release = Release{Namespace: d.Namespace, Name: d.Name}
	if err := d.Release.Validate(); err != nil {
		return fail("%v", err)
	}
	if !d.Approve && d.Reason == "" {
		return fail("a rejection needs a reason")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if g.cfg.Logger != nil { // the Decisions callback logs as the gate's handlers do
		ctx = g.cfg.Logger.With().Str("release", d.Release.String()).Logger().WithContext(ctx)
	}
	e, r, err := g.waiting(ctx, d.Release, d.Revision)
	if err != nil {
		return fail("%v", err)
	}
	req, err := g.request(ctx, e, r)
	if err != nil {
		return fail("%v", err)
	}
	if err := g.cfg.Decisions(ctx, req, d); err != nil {
		return fail("%v", err)
	}
	j := Judgement{Approve: d.Approve, Message: d.Reason, By: d.By}
	if d.Approve {
		j.Reason = "approved"
	} else {
		j.Reason = "rejected"
	}
	if err := g.publish(ctx, e, r, j, "decision", NewID()); err != nil {
		return fail("publish the verdict: %v", err)
	}
	verdict := VerdictApproved
	if !d.Approve {
		verdict = VerdictRejected
	}
	return GateDecisionReply{Revision: req.Revision, Verdict: verdict}
}

// waiting returns the release.rendered of rel's revision to decide on: of revision (0: any), the
// newest that names the gate, is no dry run and whose flow is still open; failing that, it says
// why the newest of revision does not wait for the gate.
func (g *Gate) waiting(ctx context.Context, rel Release, revision int) (event.Event, *Rendered, error) {
	subject, err := g.cfg.Names.Subject(rel, TypeRendered)
	if err != nil {
		return event.Event{}, nil, err
	}
	e, r, seq, err := g.pick(ctx, subject, revision)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		if revision > 0 {
			return event.Event{}, nil, fmt.Errorf("%s has no revision %d rendered", rel, revision)
		}
		return event.Event{}, nil, fmt.Errorf("%s has no revision rendered", rel)
	}
	if err != nil {
		return event.Event{}, nil, err
	}
	if !slices.Contains(r.Gates, g.cfg.Name) {
		return event.Event{}, nil, fmt.Errorf("revision %d of %s does not wait for gate %s (it needs: %v)", Revision(e), rel, g.cfg.Name, r.Gates)
	}
	if err := g.open(ctx, e, seq); errors.Is(err, errNotWaiting) {
		return event.Event{}, nil, fmt.Errorf("revision %d of %s is no longer waiting: %s", Revision(e), rel, strings.TrimPrefix(err.Error(), errNotWaiting.Error()+": "))
	} else if err != nil {
		return event.Event{}, nil, err
	}
	return e, r, nil
}

// errNotWaiting: a revision's flow ended, or its deadline passed.
var errNotWaiting = errors.New("not waiting")

// open is nil when the flow of e, a release.rendered stored at stream sequence seq, has not
// ended, has not gone on past its gates and its deadline has not passed (errNotWaiting, saying
// which), or another error when that cannot be told.
func (g *Gate) open(ctx context.Context, e event.Event, seq uint64) error {
	if d := FlowDeadline(e); !d.IsZero() && time.Now().After(d) {
		return fmt.Errorf("%w: its deadline passed at %s", errNotWaiting, d.UTC().Format(time.RFC3339))
	}
	key, err := FlowKey(e)
	if err != nil {
		return err
	}
	fl, _, err := g.flows.get(ctx, key)
	if err != nil {
		return err
	}
	if fl != nil && !fl.Open() {
		return fmt.Errorf("%w: it ended with %s", errNotWaiting, fl.End.Type)
	}
	// What the flow did from e on: its verdicts, or the applier going on.
	r, err := ReleaseOf(e)
	if err != nil {
		return err
	}
	last, end, err := g.cfg.Names.FlowSteps(ctx, g.js, r, &Flow{Correlation: flowOf(e), Sequence: seq})
	switch {
	case err != nil:
		return err
	case end != nil:
		return fmt.Errorf("%w: it ended with %s", errNotWaiting, end.Type())
	case last != nil:
		switch last.Type() {
		case TypeRendered, TypeApproved, TypeRejected:
		default: // its gates let it through: it is being applied
			return fmt.Errorf("%w: it went on to %s", errNotWaiting, last.Type())
		}
	}
	return nil
}

// pick walks the release.rendered events on subject (a release has few), oldest first, and
// returns, of revision (0: any), the newest waiting for the gate — naming it, its flow open —
// that is no dry run (nothing is applied after a dry run's verdicts: they are only reported),
// else the newest dry run waiting, else the newest, for waiting to say why it does not wait. A
// newer dry run, or a newer revision that does not need the gate, does not hide an older
// revision still waiting for it. jetstream.ErrMsgNotFound: none.
func (g *Gate) pick(ctx context.Context, subject string, revision int) (event.Event, *Rendered, uint64, error) {
	type rendered struct {
		e   event.Event
		r   *Rendered
		seq uint64
	}
	var all []rendered
	for seq := uint64(1); ; {
		m, err := g.stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return event.Event{}, nil, 0, err
		}
		seq = m.Sequence + 1
		e, err := g.cfg.Names.Decode(m.Subject, m.Header, m.Data)
		if err != nil || (revision > 0 && Revision(e) != revision) {
			continue
		}
		r, err := Data[Rendered](e)
		if err != nil {
			continue
		}
		all = append(all, rendered{e, r, m.Sequence})
	}
	if len(all) == 0 {
		return event.Event{}, nil, 0, jetstream.ErrMsgNotFound
	}
	for _, dryRun := range []bool{false, true} {
		for i := len(all) - 1; i >= 0; i-- {
			c := all[i]
			if !slices.Contains(c.r.Gates, g.cfg.Name) || c.r.Options.DryRun != dryRun {
				continue
			}
			err := g.open(ctx, c.e, c.seq)
			if err == nil {
				return c.e, c.r, c.seq, nil
			}
			if !errors.Is(err, errNotWaiting) {
				return event.Event{}, nil, 0, err
			}
		}
	}
	newest := all[len(all)-1]
	return newest.e, newest.r, newest.seq, nil
}
