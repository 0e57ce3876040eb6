package events

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"
)

// SubscriberConfig configures a Subscriber. Zero values take the defaults named on each field.
type SubscriberConfig struct {
	// Service names the service: the durable consumer every replica shares, the dead-letter
	// subject troupe.dlq.<service>.…, and the source troupe/<service> of what the subscriber
	// publishes itself. Required; letters, digits, '-' and '_'.
	Service string
	// Version is advertised in the service's $SRV.INFO. Default: this build's (Version).
	Version string
	// Names are the system it works in: the live one (zero value) or a sandbox.
	Names Names
	// Types are the event types the service consumes; the consumer is filtered to them. Required.
	Types []string
	// Produces are the event types the service publishes, advertised in $SRV.INFO.
	Produces []string
	// Concurrency bounds how many events this replica handles at once. Default 4.
	Concurrency int
	// MaxDeliver bounds how many times an event is delivered before it is dead-lettered.
	// Default 5.
	MaxDeliver int
	// Backoff is the delay before redelivery after the n-th failed delivery (the last entry
	// repeats). Default 1s, 5s, 15s, 30s.
	Backoff []time.Duration
	// AckWait is how long the server waits for an ack before redelivering. A running handler
	// sends in-progress heartbeats every AckWait/3, so long work is not redelivered. Default 30s.
	AckWait time.Duration
	// HandlerTimeout bounds one handler run. Default 10m.
	HandlerTimeout time.Duration
	// DrainTimeout bounds how long Start waits for running handlers once ctx ends; after it their
	// ctx is cancelled. Default 30s.
	DrainTimeout time.Duration
	// DeliverAll makes a newly created consumer start at the beginning of the stream. Default:
	// new events only. An existing durable consumer always resumes where it stopped.
	DeliverAll bool
	// FailStage, when set, makes the subscriber publish release.failed with this stage for every
	// event it dead-letters (terminal error, deliveries exhausted, malformed input) whose Error
	// names no stage of its own, so the user sees why the release stopped. Leave it empty for
	// services that only observe.
	FailStage string
	// Logger is the base logger. Default: a disabled logger.
	Logger *zerolog.Logger
	// Metrics records handler and consumer metrics. Optional.
	Metrics *Metrics
	// Middleware wraps the handler inside the built-in tracing, logging, metrics, timeout and
	// recover.
	Middleware []Middleware
	// TracerProvider, when set, starts a span per handled event (Tracing), and the events the
	// handler publishes carry it as their traceparent. Default: no spans; the events a handler
	// derives carry its cause's traceparent on.
	TracerProvider trace.TracerProvider
}

func (c *SubscriberConfig) defaults() error {
	if !serviceNameRE.MatchString(c.Service) {
		return fmt.Errorf("subscriber: service name %q must be letters, digits, '-' and '_'", c.Service)
	}
	if len(c.Types) == 0 {
		return fmt.Errorf("subscriber %s: no event types to consume", c.Service)
	}
	if c.FailStage != "" {
		if err := (&Failed{Stage: c.FailStage, Reason: "x", Message: "x"}).Validate(); err != nil {
			return fmt.Errorf("subscriber %s: fail stage: %w", c.Service, err)
		}
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 4
	}
	if c.MaxDeliver <= 0 {
		c.MaxDeliver = 5
	}
	if len(c.Backoff) == 0 {
		c.Backoff = []time.Duration{time.Second, 5 * time.Second, 15 * time.Second, 30 * time.Second}
	}
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if c.HandlerTimeout <= 0 {
		c.HandlerTimeout = 10 * time.Minute
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		l := zerolog.Nop()
		c.Logger = &l
	}
	return nil
}

// Subscriber runs a service's handler on the events of its types.
//
// Every replica of a service shares one durable pull consumer named after the service, so
// replicas split the work. What happens to an event is decided in one place, from the handler's
// error:
//
//   - nil: ack.
//   - an *Error that is not Transient (Terminal, Reject): dead-letter with the reason, publish
//     release.failed (the Error's stage, reason, message, objects; when it or FailStage names a
//     stage), then term. Never retried.
//   - a Transient *Error, or any other error (a recovered panic too): nak with the backoff for
//     this delivery; on the MaxDeliver-th delivery, give up as for a terminal error — with the
//     Error's reason, or max_deliveries for another error.
//
// Handlers never publish release.failed themselves: this is the one place it is published, once
// per event given up on.
//   - while the handler runs: an in-progress heartbeat every AckWait/3 (at most), so long work
//     is not redelivered to another replica.
//
// Bytes that are not a valid troupe CloudEvent never reach the handler: they are dead-lettered
// with what is wrong. If dead-lettering itself fails, the event is nakked and tried again later,
// never dropped. The server's own delivery limit is off, so the server never drops an event the
// subscriber did not give up on.
type Subscriber struct {
	js        jetstream.JetStream
	cfg       SubscriberConfig
	handler   Handler
	pub       *Publisher
	log       zerolog.Logger
	inflight  inflight
	ready     chan struct{}
	readyOnce sync.Once
	receiving atomic.Bool
	draining  atomic.Bool   // ctx ended: acks wait for the server (see ack)
	floor     atomic.Uint64 // the consumer's last ack floor seen (stream sequence): see recreate
}

// NewSubscriber checks cfg and returns a Subscriber that runs h when started.
func NewSubscriber(js jetstream.JetStream, cfg SubscriberConfig, h Handler) (*Subscriber, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	log := cfg.Logger.With().Str("service", cfg.Service).Logger()
	var mws []Middleware
	if cfg.TracerProvider != nil {
		mws = append(mws, Tracing(cfg.TracerProvider, cfg.Service))
	}
	mws = append(mws, Logging(log))
	if cfg.Metrics != nil {
		mws = append(mws, Instrument(cfg.Metrics, cfg.Service))
	}
	mws = append(mws, Timeout(cfg.HandlerTimeout), Recover())
	mws = append(mws, cfg.Middleware...)
	return &Subscriber{js: js, cfg: cfg, handler: Chain(h, mws...), pub: NewPublisher(js, cfg.Names), log: log,
		inflight: inflight{msgs: map[jetstream.Msg]struct{}{}}, ready: make(chan struct{})}, nil
}

// ConsumerConfig returns the durable consumer configuration the subscriber creates or updates.
func (s *Subscriber) ConsumerConfig() (jetstream.ConsumerConfig, error) {
	filters := make([]string, 0, len(s.cfg.Types))
	for _, t := range s.cfg.Types {
		f, err := s.cfg.Names.TypeFilter(t)
		if err != nil {
			return jetstream.ConsumerConfig{}, fmt.Errorf("subscriber %s: %w", s.cfg.Service, err)
		}
		filters = append(filters, f)
	}
	deliver := jetstream.DeliverNewPolicy
	if s.cfg.DeliverAll {
		deliver = jetstream.DeliverAllPolicy
	}
	return jetstream.ConsumerConfig{
		Durable:        s.cfg.Service,
		Description:    "troupe service " + s.cfg.Service,
		FilterSubjects: filters,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        s.cfg.AckWait,
		MaxDeliver:     -1,
		DeliverPolicy:  deliver,
		MaxAckPending:  max(1000, 4*s.cfg.Concurrency),
	}, nil
}

// Ready is closed once Start has created the consumer and is fetching: from then on no event of
// the subscriber's types is missed, even by a consumer that delivers new events only.
func (s *Subscriber) Ready() <-chan struct{} { return s.ready }

// Receiving reports whether the subscriber is fetching from its consumer now: false before Start
// created it, while a consumer that disappeared is created again, and once Start is stopping.
func (s *Subscriber) Receiving() bool { return s.receiving.Load() }

// Start creates or updates the service's durable consumer, registers the service for discovery
// ($SRV.INFO), and handles events until ctx ends. Then it stops fetching, hands back events it
// fetched but did not start (nak, for another replica), waits up to DrainTimeout for running
// handlers, and returns nil. Start it once per Subscriber; for more throughput raise Concurrency
// or run more replicas.
//
// Start waits for NATS: while the consumer cannot be created (no connection, JetStream or the
// stream not there yet, a consumer of that name it cannot update) it tries again with backoff,
// logging why, until ctx ends. A consumer that disappears while Start runs (deleted, or lost with
// a server's store) is created again, Receiving false meanwhile (see recreate). It returns an
// error only if it could not start: a configuration that can never work.
func (s *Subscriber) Start(ctx context.Context) error {
	cc, err := s.ConsumerConfig()
	if err != nil {
		return err
	}
	cons, ok := s.ensureConsumer(ctx, cc)
	if !ok {
		return nil // ctx ended while waiting for NATS
	}
	svc, err := RegisterService(s.js, ServiceInfo{Name: s.cfg.Service, Version: s.cfg.Version, Consumes: s.cfg.Types,
		Produces: s.cfg.Produces, Names: s.cfg.Names})
	if err != nil {
		return err
	}
	defer func() { _ = svc.Stop() }()

	// Handlers outlive ctx by up to DrainTimeout, so that a shutdown lets running work finish.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopDraining := context.AfterFunc(ctx, func() { s.draining.Store(true) })
	defer stopDraining()
	go s.heartbeats(workCtx)

	// A fixed pool of workers, not a goroutine per event: workers keep the stacks that decoding
	// and handlers grow, instead of growing a fresh one for every event.
	work := make(chan jetstream.Msg)
	var wg sync.WaitGroup
	for range s.cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for msg := range work {
				s.process(workCtx, msg)
			}
		}()
	}
	for {
		err := s.consume(ctx, cons, work)
		if ctx.Err() != nil || s.js.Conn().IsClosed() {
			break
		}
		s.log.Warn().Err(err).Str("consumer", cc.Durable).Msg("consumer lost: creating it again")
		if cons, ok = s.recreate(ctx, cc); !ok {
			break
		}
	}
	close(work)

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(s.cfg.DrainTimeout):
		s.log.Warn().Dur("drain_timeout", s.cfg.DrainTimeout).Msg("handlers still running at shutdown: cancelling them")
		cancelWork()
		<-done
	}
	s.log.Info().Msg("stopped")
	return nil
}

// consume fetches from cons and hands each event to work until ctx ends (it drains, handing back
// what it fetched but did not start) or the consumer is gone: deleted (the server says so), or
// silent with no consumer of its name left (missing heartbeats). It returns why it stopped.
func (s *Subscriber) consume(ctx context.Context, cons jetstream.Consumer, work chan<- jetstream.Msg) error {
	it, err := cons.Messages(jetstream.PullMaxMessages(s.cfg.Concurrency), jetstream.PullExpiry(5*time.Second),
		jetstream.WithMessagesErrOnMissingHeartbeat(true))
	if err != nil {
		return fmt.Errorf("subscriber %s: consume: %w", s.cfg.Service, err)
	}
	defer it.Stop()
	// Still the one made: one deleted and replaced since (by hand, by another party) would serve
	// the pulls about to go out under the same name, with no "deleted" to stop them, until
	// watchConsumer's next look. Replaced after this look and before the first pull (the pulls
	// go out as Next runs, right below), it still would: a window of a request, not of seconds.
	// A look that fails otherwise (NATS busy electing a leader) is no verdict: the pulls go on.
	info, err := cons.Info(ctx)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		return fmt.Errorf("subscriber %s: consume: %w", s.cfg.Service, err)
	case err == nil && (!s.ours(info) || !info.Created.Equal(cons.CachedInfo().Created)):
		return fmt.Errorf("subscriber %s: consume: consumer %s was replaced since it was made", s.cfg.Service, info.Name)
	}
	s.log.Info().Strs("types", s.cfg.Types).Int("concurrency", s.cfg.Concurrency).Msg("subscribed")
	s.receiving.Store(true)
	defer s.receiving.Store(false)
	s.readyOnce.Do(func() { close(s.ready) })

	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case <-ctx.Done():
			s.receiving.Store(false)
			it.Drain()
		case <-stopped:
		}
	}()
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go s.watchConsumer(watchCtx, cons, it.Stop)

	for {
		msg, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil || s.gone(ctx, cons, err) {
				return err
			}
			s.log.Warn().Err(err).Msg("fetch")
			select { // do not spin on a persistent error
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		if ctx.Err() != nil {
			// Fetched but not started: hand it back at once instead of holding it till AckWait.
			_ = msg.Nak()
			continue
		}
		work <- msg
	}
}

// gone reports whether err, from fetching, means the consumer no longer exists: the server said
// it was deleted, or heartbeats stopped and the server knows no consumer of its name, or one that
// is not the subscriber's (created in its place by someone else). Missing heartbeats alone are a
// connection or a leader change the iterator recovers from.
func (s *Subscriber) gone(ctx context.Context, cons jetstream.Consumer, err error) bool {
	if errors.Is(err, jetstream.ErrConsumerDeleted) {
		return true
	}
	if !errors.Is(err, jetstream.ErrNoHeartbeat) {
		return false
	}
	info, ierr := cons.Info(ctx)
	return errors.Is(ierr, jetstream.ErrConsumerNotFound) || ierr == nil && !s.ours(info)
}

// ours reports whether info is of a consumer this subscriber's service made.
func (s *Subscriber) ours(info *jetstream.ConsumerInfo) bool {
	return info != nil && info.Config.Description == "troupe service "+s.cfg.Service
}

// ensureConsumer creates the consumer cc or updates the existing one, trying again with backoff
// while it cannot (NATS not connected, JetStream or the stream not there yet, an existing
// consumer of that name it cannot update), saying why in the log. It returns false once ctx ended.
func (s *Subscriber) ensureConsumer(ctx context.Context, cc jetstream.ConsumerConfig) (jetstream.Consumer, bool) {
	stream := s.cfg.Names.Stream()
	wait := 100 * time.Millisecond
	for {
		cons, err := s.createOrUpdate(ctx, stream, cc)
		if err == nil {
			return cons, true
		}
		if ctx.Err() != nil {
			return nil, false
		}
		s.log.Warn().Err(err).Str("stream", stream).Str("consumer", cc.Durable).Dur("retry_in", wait).
			Msg("waiting for NATS: cannot create the consumer")
		select {
		case <-ctx.Done():
			return nil, false
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// createOrUpdate creates or updates the consumer cc on stream. Where an existing consumer starts
// is kept: the server cannot update a deliver policy, and an existing consumer resumes at its ack
// floor whatever it says.
//
// A new consumer of new events only is created at the stream's next sequence
// (DeliverByStartSequence), not with DeliverNew: a server SIGKILLed before it flushed the
// consumer's state recovers it from its config, and DeliverNew would then start after the
// stream's end, skipping every event delivered but not acked — a revision nobody ever ends. From
// a fixed sequence those are delivered again.
func (s *Subscriber) createOrUpdate(ctx context.Context, stream string, cc jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	c, err := s.js.Consumer(ctx, stream, cc.Durable)
	switch {
	case err == nil:
		have := c.CachedInfo().Config
		cc.DeliverPolicy, cc.OptStartSeq, cc.OptStartTime = have.DeliverPolicy, have.OptStartSeq, have.OptStartTime
	case !errors.Is(err, jetstream.ErrConsumerNotFound):
		return nil, fmt.Errorf("subscriber %s: consumer on %s: %w", s.cfg.Service, stream, err)
	case cc.DeliverPolicy == jetstream.DeliverNewPolicy:
		st, err := s.js.Stream(ctx, stream)
		if err != nil {
			return nil, fmt.Errorf("subscriber %s: stream %s: %w", s.cfg.Service, stream, err)
		}
		cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, st.CachedInfo().State.LastSeq+1
	}
	cons, err := s.js.CreateOrUpdateConsumer(ctx, stream, cc)
	if err != nil {
		return nil, fmt.Errorf("subscriber %s: create consumer on %s: %w", s.cfg.Service, stream, err)
	}
	s.noteFloor(cons.CachedInfo())
	return cons, nil
}

// recreate creates a consumer that disappeared again, with the same config but starting just
// after the last ack floor the subscriber saw (DeliverByStartSequence), whatever its deliver
// policy: a deleted durable loses its ack floor, and neither "new events only" (events published
// while it was gone would be skipped) nor "all" (every service would handle the whole stream
// again) is right. Events acked after the floor was last read (at most a few seconds' worth,
// watchConsumer), and those being handled when it went (their acks went nowhere), are delivered
// again: handlers are idempotent. No event is skipped. If another replica recreated it first,
// this one takes it as it is.
func (s *Subscriber) recreate(ctx context.Context, cc jetstream.ConsumerConfig) (jetstream.Consumer, bool) {
	cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, s.floor.Load()+1
	cons, ok := s.ensureConsumer(ctx, cc)
	if ok {
		s.log.Info().Uint64("start_sequence", cc.OptStartSeq).Msg("consumer created again")
	}
	return cons, ok
}

// noteFloor records the consumer's ack floor: every event of the stream up to it was acked.
func (s *Subscriber) noteFloor(info *jetstream.ConsumerInfo) {
	if !s.ours(info) {
		return // not a consumer of this subscriber's making: its floor says nothing
	}
	s.floor.Store(info.AckFloor.Stream)
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.pending.WithLabelValues(s.cfg.Service).Set(float64(info.NumPending))
	}
}

// process handles one delivery and settles it.
func (s *Subscriber) process(ctx context.Context, msg jetstream.Msg) {
	md, err := msg.Metadata()
	if err != nil {
		s.log.Error().Err(err).Str("subject", msg.Subject()).Msg("message without JetStream metadata")
		_ = msg.Term()
		return
	}
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.pending.WithLabelValues(s.cfg.Service).Set(float64(md.NumPending))
	}
	e, err := s.cfg.Names.Decode(msg.Subject(), msg.Headers(), msg.Data())
	if err != nil {
		s.giveUp(ctx, msg, md, nil, Error{Reason: "malformed", Message: err.Error()}, err.Error())
		return
	}
	if md.NumDelivered > 1 && s.cfg.Metrics != nil {
		s.cfg.Metrics.redelivered.WithLabelValues(s.cfg.Service, e.Type()).Inc()
	}

	s.inflight.add(msg)
	ctx = context.WithValue(ctx, deliveryKey{}, Delivery{Stream: md.Stream, Sequence: md.Sequence.Stream,
		Deliveries: md.NumDelivered, MaxDeliver: uint64(s.cfg.MaxDeliver), RetryDelay: s.backoff(md)})
	hctx, handled := ctx, (*trace.SpanContext)(nil)
	if s.cfg.TracerProvider != nil { // where Tracing leaves the handler's span, for a give-up to publish under
		handled = new(trace.SpanContext)
		hctx = context.WithValue(ctx, handledSpanKey{}, handled)
	}
	err = s.handler(hctx, e)
	s.inflight.remove(msg)
	if handled != nil && handled.IsValid() {
		ctx = trace.ContextWithSpanContext(ctx, *handled) // release.failed: a child of the failed handling
	}

	switch {
	case err == nil:
		if aerr := s.ack(msg); aerr != nil {
			s.log.Warn().Err(aerr).Str("event_id", e.ID()).Msg("ack")
		}
	case IsTerminal(err):
		s.giveUp(ctx, msg, md, &e, failureOf(err), err.Error())
	case md.NumDelivered >= uint64(s.cfg.MaxDeliver):
		f, why := failureOf(err), fmt.Sprintf("gave up after %d deliveries: %v", md.NumDelivered, err)
		if e, ok := errors.AsType[*Error](err); !ok || e.Reason == "" {
			f.Reason, f.Message = "max_deliveries", why
		}
		s.giveUp(ctx, msg, md, &e, f, why)
	default:
		s.retry(msg, md)
	}
}

// ack acknowledges msg. While draining it waits for the server to confirm (a double ack): the
// server applies acks on its own queue, and a process that exits once Start returned must not
// leave an ack in flight that the server never applied, redelivering finished work to another
// replica after AckWait. In normal running a plain ack keeps the handler's path short.
func (s *Subscriber) ack(msg jetstream.Msg) error {
	if !s.draining.Load() {
		return msg.Ack()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return msg.DoubleAck(ctx)
}

// failureOf is the Error err is or wraps, or a new one around err.
func failureOf(err error) Error {
	if e, ok := errors.AsType[*Error](err); ok {
		f := *e
		f.Message = e.Error()
		f.Reason = e.reason()
		return f
	}
	return Error{Reason: "terminal", Message: err.Error(), Err: err}
}

// retry naks msg with the backoff for its delivery count.
func (s *Subscriber) retry(msg jetstream.Msg, md *jetstream.MsgMetadata) {
	if err := msg.NakWithDelay(s.backoff(md)); err != nil {
		s.log.Warn().Err(err).Str("subject", msg.Subject()).Msg("nak")
	}
}

// backoff is the delay before the delivery after md's, should md's fail.
func (s *Subscriber) backoff(md *jetstream.MsgMetadata) time.Duration {
	i := min(int(md.NumDelivered)-1, len(s.cfg.Backoff)-1)
	return s.cfg.Backoff[max(i, 0)]
}

// giveUp is the one place an event is given up on: dead letter (why), release.failed when the
// failure has a stage (its own, else FailStage), then term. If a publish fails the event is
// nakked instead, to be tried again; both publishes have derived ids, so trying again stores
// each once.
func (s *Subscriber) giveUp(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, e *event.Event, f Error, why string) {
	log := s.log.With().Str("subject", msg.Subject()).Str("cause", f.Reason).Logger()
	if err := publishDeadLetter(ctx, s.js, s.cfg.Names, s.cfg.Service, msg, md, why); err != nil {
		log.Error().Err(err).Msg("dead-letter failed; retrying the event later")
		s.retry(msg, md)
		return
	}
	if f.Stage == "" {
		f.Stage = s.cfg.FailStage
	}
	if f.Stage != "" {
		err := s.publishFailed(ctx, msg, md, e, f)
		switch {
		case errors.Is(err, ErrFlowEnded):
			// The revision already ended (superseded, or failed by the deadline watchdog): its
			// one terminal event is out, this failure is only the dead letter's.
			log.Info().Err(err).Msg("release.failed not published")
		case err != nil:
			log.Error().Err(err).Msg("publish release.failed failed; retrying the event later")
			s.retry(msg, md)
			return
		}
	}
	if s.cfg.Metrics != nil {
		typ := "unknown"
		if e != nil {
			typ = e.Type()
		}
		s.cfg.Metrics.deadLettered.WithLabelValues(s.cfg.Service, typ, f.Reason).Inc()
	}
	log.Warn().Str("reason", why).Msg("dead-lettered")
	if err := msg.TermWithReason(headerSafe(f.Reason+": "+why, 256)); err != nil {
		log.Warn().Err(err).Msg("term")
	}
}

// publishFailed tells the user why the subscriber gave up on a release's event. For malformed
// input there is no event to react to: the release comes from the NATS subject when it names one,
// and the correlation id from the stream position.
func (s *Subscriber) publishFailed(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, e *event.Event, f Error) error {
	failed := Failed{Stage: f.Stage, Reason: f.Reason, Message: Truncate(f.Message, MaxMessageLength)}
	for i, o := range f.Objects {
		if i == maxFailedObjects {
			break
		}
		o.Message = Truncate(o.Message, maxFailedObjectMessage)
		failed.Objects = append(failed.Objects, o)
	}
	var cause event.Event
	if e != nil {
		cause = *e
	} else {
		r, _, err := s.cfg.Names.ParseSubject(msg.Subject())
		if err != nil {
			return nil // no release to tell: the dead letter is all there is
		}
		cause = event.New()
		cause.SetID(fmt.Sprintf("%s:%d", md.Stream, md.Sequence.Stream))
		cause.SetSubject(r.String())
		failed.Reason = "malformed_event"
	}
	publish := func(failed Failed) error {
		out, err := Derive(cause, SourcePrefix+s.cfg.Service, TypeFailed, failed)
		if err != nil {
			return err
		}
		if f.Revision > 0 {
			WithRevision(&out, f.Revision)
		}
		_, err = s.pub.Publish(ctx, out)
		return err
	}
	err := publish(failed)
	if errors.Is(err, ErrInvalidPayload) || errors.Is(err, ErrMalformed) || errors.Is(err, nats.ErrMaxPayload) {
		// Retrying cannot fix it (a handler's reason that is no code, objects too large): the
		// user still learns that the revision failed, and where — never a loop.
		s.log.Error().Err(err).Str("subject", msg.Subject()).Msg("release.failed as given cannot be published: publishing it without its objects")
		minimal := Failed{Stage: failed.Stage, Reason: failed.Reason, Message: Truncate(failed.Message, maxFailedObjectMessage)}
		if minimal.Validate() != nil {
			minimal.Reason = "terminal"
		}
		err = publish(minimal)
	}
	return err
}

// Bounds of what one release.failed names: the objects, and each object's message, so that it
// always fits a NATS message (1 MiB).
const (
	maxFailedObjects       = 100
	maxFailedObjectMessage = 1 << 10
)

// Delivery is where and how often the event a handler runs on was delivered.
type Delivery struct {
	Stream     string
	Sequence   uint64 // the event's position in the stream: what revision numbering follows
	Deliveries uint64 // 1 on the first delivery
	MaxDeliver uint64 // the delivery after which the subscriber gives up
	// RetryDelay is how long after this delivery fails with a transient error the next one
	// comes: a handler whose deadline passes before then fails for good now instead.
	RetryDelay time.Duration
}

// Last reports whether this is the last delivery before the subscriber gives up on an error.
func (d Delivery) Last() bool { return d.Deliveries >= d.MaxDeliver }

type deliveryKey struct{}

// DeliveryFrom returns the delivery of the event a Subscriber's handler runs on.
func DeliveryFrom(ctx context.Context) (Delivery, bool) {
	d, ok := ctx.Value(deliveryKey{}).(Delivery)
	return d, ok
}

// inflight is the set of events being handled, which one loop keeps alive with in-progress
// heartbeats every AckWait/3 — one ticker per subscriber rather than a timer per event.
type inflight struct {
	mu   sync.Mutex
	msgs map[jetstream.Msg]struct{}
}

func (f *inflight) add(m jetstream.Msg) {
	f.mu.Lock()
	f.msgs[m] = struct{}{}
	f.mu.Unlock()
}

func (f *inflight) remove(m jetstream.Msg) {
	f.mu.Lock()
	delete(f.msgs, m)
	f.mu.Unlock()
}

// heartbeats runs until ctx ends.
func (s *Subscriber) heartbeats(ctx context.Context) {
	every(ctx, s.cfg.AckWait/3, func() {
		s.inflight.mu.Lock()
		msgs := make([]jetstream.Msg, 0, len(s.inflight.msgs))
		for m := range s.inflight.msgs {
			msgs = append(msgs, m)
		}
		s.inflight.mu.Unlock()
		for _, m := range msgs {
			if err := m.InProgress(); err != nil {
				s.log.Debug().Err(err).Str("subject", m.Subject()).Msg("in-progress heartbeat")
			}
		}
	})
}

// watchConsumer reads the consumer's info every few seconds while it is consumed: the ack floor
// a recreated consumer starts after, and the pending gauge while the consumer is idle. When the
// consumer is gone, or another of the same name took its place (whose pulls the iterator would
// go on answering), it calls lost: the iterator stops, and Start creates it again.
func (s *Subscriber) watchConsumer(ctx context.Context, cons jetstream.Consumer, lost func()) {
	every(ctx, 5*time.Second, func() {
		info, err := cons.Info(ctx)
		switch {
		case err == nil && s.ours(info):
			s.noteFloor(info)
		case err == nil || errors.Is(err, jetstream.ErrConsumerNotFound):
			lost()
		}
	})
}

// every calls f every d until ctx ends.
func every(ctx context.Context, d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

// Truncate cuts s to at most n bytes, on a rune boundary, marking the cut with "...": for
// free-text fields with a size limit (MaxMessageLength, MaxNotesLength).
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - 3
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}
