package health

import (
	"context"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/util/workqueue"

	"github.com/troupe-dev/troupe/events"
)

// Name is the service's name: its durable consumer and its source troupe/health.
const Name = "health"

const source = events.SourcePrefix + Name

// releaseLabel is the label the applier puts on every object it applies: the inventory watches
// select on it, so they hold troupe's objects only.
const releaseLabel = "troupe.dev/release"

// workers is how many releases are judged and delivered at once.
const workers = 8

// A delivery the stream or the bucket refused is tried again after these, doubling.
const (
	retryFirst = 200 * time.Millisecond
	retryMax   = 10 * time.Second
)

// Options configure the service.
type Options struct {
	// PerNamespace watches each kind per namespace rather than across the cluster: for a watcher
	// whose RBAC grants namespaces, not the cluster. Default false: one watch per kind.
	PerNamespace bool
	// ProgressInterval is the least time between two release.progressing of one release.
	// Default 1s.
	ProgressInterval time.Duration
	// Subscriber tunes the consumer; Service, Types, Produces, FailStage, Logger and Metrics are
	// set by New.
	Subscriber events.SubscriberConfig
	Names      events.Names // the system it works in: the live one (zero value) or a sandbox
	Version    string
	Logger     *zerolog.Logger
	Metrics    *events.Metrics
}

// Service is the health watcher.
//
// Each release has one worker at a time: the client-go workqueue hands a release to one worker
// until it is done with it. Event handlers and watches never touch a tracker's state; they ask
// the release's worker (ask, tell) or queue the release (a watched object changed). The worker
// delivers what was decided and is not out yet, runs what handlers asked, then judges the
// revision followed (evaluate) and hands the decision to the outbox.
type Service struct {
	opts    Options
	log     zerolog.Logger
	out     *outbox
	sub     *events.Subscriber
	mapper  meta.ResettableRESTMapper
	watches *watches
	queue   workqueue.TypedRateLimitingInterface[events.Release]

	mu          sync.Mutex // guards the index below, and trackers' watches
	releases    map[events.Release]*tracker
	byObject    map[objectKey][]*tracker
	byNamespace map[string][]*tracker // releases whose pods are watched, by namespace
	inbox       map[events.Release][]func(context.Context)
}

// New opens what the service shares through NATS (made by events.Provision) and returns the
// service for the cluster cfg reaches, ready to Start.
func New(ctx context.Context, js jetstream.JetStream, cfg *rest.Config, o Options) (*Service, error) {
	if o.ProgressInterval <= 0 {
		o.ProgressInterval = time.Second
	}
	s := &Service{opts: o, log: zerolog.Nop(), releases: map[events.Release]*tracker{},
		byObject: map[objectKey][]*tracker{}, byNamespace: map[string][]*tracker{},
		inbox: map[events.Release][]func(context.Context){},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[events.Release](retryFirst, retryMax),
			workqueue.TypedRateLimitingQueueConfig[events.Release]{Name: Name})}
	if o.Logger != nil {
		s.log = *o.Logger
	}
	var err error
	if s.out, err = newOutbox(ctx, js, o.Names, s.log); err != nil {
		return nil, err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	s.mapper = restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	s.watches = newWatches(dyn, s.changed, s.synced)
	sc := o.Subscriber
	sc.Service, sc.Version, sc.Names = Name, o.Version, o.Names
	sc.Types = []string{events.TypeApplied, events.TypeUninstalled, events.TypeRendered, events.TypeFailed, events.TypeSuperseded}
	sc.Produces = []string{events.TypeProgressing, events.TypeReady, events.TypeFailed, events.TypeDegraded,
		events.TypeRecovered, events.TypeSuperseded}
	sc.FailStage, sc.Logger, sc.Metrics = events.StageHealth, o.Logger, o.Metrics
	if s.sub, err = events.NewSubscriber(js, sc, s.handle); err != nil {
		return nil, err
	}
	return s, nil
}

// Start resumes the releases the KV bucket says are followed, then handles events until ctx
// ends. The workers outlive the subscriber's drain: a handler still running waits for one.
func (s *Service) Start(ctx context.Context) error {
	defer s.stop()
	if err := s.resume(ctx); err != nil {
		return err
	}
	work, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() { s.work(work) })
	}
	defer func() {
		cancel()
		s.queue.ShutDown()
		wg.Wait()
	}()
	return s.sub.Start(ctx)
}

// Ready is closed once the service receives events.
func (s *Service) Ready() <-chan struct{} { return s.sub.Ready() }

// Receiving reports whether the service receives events now (serve.Receiver): false while its
// consumer is created again after it disappeared.
func (s *Service) Receiving() bool { return s.sub.Receiving() }

// Watches is the number of watches running (informers: kinds × namespaces).
func (s *Service) Watches() int { return s.watches.count() }

func (s *Service) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.releases {
		s.untrackLocked(t)
	}
	s.watches.stopAll()
}

func (s *Service) handle(ctx context.Context, e event.Event) error {
	rel, err := events.ReleaseOf(e)
	if err != nil {
		return events.Terminal(err)
	}
	switch e.Type() {
	case events.TypeApplied:
		a, err := events.Data[events.Applied](e)
		if err != nil {
			return events.Terminal(err)
		}
		d, _ := events.DeliveryFrom(ctx)
		rec, err := newRecord(s.opts.Names, e, rel, d.Sequence)
		if err != nil {
			return events.Terminal(err)
		}
		return s.ask(ctx, rel, func(ctx context.Context) error { return s.follow(ctx, rel, rec, e, a) })
	case events.TypeRendered, events.TypeFailed, events.TypeSuperseded:
		if on, ok := announces(e); ok {
			s.tell(rel, func(context.Context) { s.replacing(rel, events.Revision(e), on) })
		}
		return nil
	case events.TypeUninstalled:
		return s.ask(ctx, rel, func(ctx context.Context) error { return s.forget(ctx, rel) })
	}
	return events.Terminalf("health: unexpected %s", e.Type())
}

// ask has rel's worker run f after what it has to do for rel already, and returns f's error,
// or ctx's if it ends first (f may then still run: what it does is idempotent).
func (s *Service) ask(ctx context.Context, rel events.Release, f func(context.Context) error) error {
	done := make(chan error, 1)
	s.tell(rel, func(ctx context.Context) { done <- f(ctx) })
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// tell has rel's worker run f after what it has to do for rel already.
func (s *Service) tell(rel events.Release, f func(context.Context)) {
	s.mu.Lock()
	s.inbox[rel] = append(s.inbox[rel], f)
	s.mu.Unlock()
	s.queue.Add(rel)
}

func (s *Service) work(ctx context.Context) {
	for {
		rel, shutdown := s.queue.Get()
		if shutdown {
			return
		}
		if err := s.sync(ctx, rel); err != nil {
			s.log.Warn().Err(err).Str("release", rel.String()).Msg("delivery failed: retrying")
			s.queue.AddRateLimited(rel)
		} else {
			s.queue.Forget(rel)
		}
		s.queue.Done(rel)
	}
}

// sync does, in order, what rel's worker has to: deliver a decision not out yet, run what
// handlers asked, judge the revision followed and deliver the decision. A failed delivery stops
// it: it is tried again, first, the next time.
func (s *Service) sync(ctx context.Context, rel events.Release) error {
	if err := s.flush(ctx, rel); err != nil {
		return err
	}
	s.mu.Lock()
	asked := s.inbox[rel]
	delete(s.inbox, rel)
	s.mu.Unlock()
	for _, f := range asked {
		f(ctx)
	}
	t := s.tracker(rel)
	if t == nil {
		return nil
	}
	if t.pending == nil || t.pending.expendable() { // else what was asked left one: it goes first
		d := evaluate(t.state, s.observe(t), time.Now(), s.opts.ProgressInterval)
		if !d.retryAt.IsZero() {
			s.queue.AddAfter(rel, time.Until(d.retryAt))
		}
		t.pending = &delivery{decision: d}
		if d.next.phase != phaseProgressing {
			s.unwatchPods(t) // they fail a progressing revision fast; the decision stands
		}
	}
	return s.deliver(ctx, t)
}

// flush delivers the decision of rel's revision that is not out yet, if any and if it matters
// still: a progress report does not, once something newer is to be decided.
func (s *Service) flush(ctx context.Context, rel events.Release) error {
	if t := s.tracker(rel); t != nil && t.pending != nil && !t.pending.expendable() {
		return s.deliver(ctx, t)
	}
	return nil
}

// deliver hands t's pending decision to the outbox and, once it is out, moves t on.
func (s *Service) deliver(ctx context.Context, t *tracker) error {
	if err := s.out.deliver(ctx, t, t.pending); err != nil {
		return err
	}
	s.settle(t, t.pending.next)
	t.pending = nil
	return nil
}

// follow starts following the revision applied, unless its release.applied is one the bucket
// has followed already, or older: its wait is over before it began. The older revision it
// replaces, if still progressing, is superseded. The record is written before the event is
// acked: a restart resumes the revision.
func (s *Service) follow(ctx context.Context, rel events.Release, rec record, applied event.Event, a *events.Applied) error {
	prev, err := s.out.recorded(ctx, rel)
	if err != nil {
		return err
	}
	if prev != nil && prev.Sequence >= rec.Sequence && rec.Sequence > 0 {
		if prev.Sequence == rec.Sequence {
			return nil // a redelivery: followed already
		}
		return s.out.publish(ctx, applied, false, outgoing{typ: events.TypeSuperseded,
			data: events.Superseded{ByRevision: prev.Revision, Stage: events.StageHealth}})
	}
	if err := s.flush(ctx, rel); err != nil { // what a request before this one left
		return err
	}
	if old := s.tracker(rel); old != nil {
		st := old.state
		st.supersededBy = rec.Revision
		old.pending = &delivery{decision: evaluate(st, observation{}, time.Now(), s.opts.ProgressInterval)}
		if err := s.deliver(ctx, old); err != nil {
			return err // the worker tries old's release.superseded again; the event is redelivered
		}
	}
	if err := s.out.put(ctx, rec); err != nil {
		return err
	}
	s.track(s.newTracker(rel, rec, applied, a))
	return nil
}

// announces says whether e announces another revision on its way to the cluster (a real
// release.rendered, a rollback's too: on) or one that will not come after all (its
// release.failed before health, its release.superseded: off); ok is false when e says neither.
func announces(e event.Event) (on, ok bool) {
	switch e.Type() {
	case events.TypeRendered:
		r, err := events.Data[events.Rendered](e)
		return true, err == nil && !r.Options.DryRun
	case events.TypeFailed:
		f, err := events.Data[events.Failed](e)
		return false, err == nil && f.Stage != events.StageHealth
	}
	return false, true
}

// replacing notes that another revision of rel than the one followed is on its way, or not.
func (s *Service) replacing(rel events.Release, revision int, on bool) {
	if t := s.tracker(rel); t != nil && (on || revision != t.rec.Revision) {
		t.state.replacing = on
	}
}

// forget lets rel go: it was uninstalled. The record goes first: a restart must not resume it.
func (s *Service) forget(ctx context.Context, rel events.Release) error {
	if err := s.out.forget(ctx, rel); err != nil {
		return err
	}
	if t := s.tracker(rel); t != nil {
		s.untrack(t)
	}
	return nil
}

// resume follows again what the KV bucket says is followed: revisions still progressing (their
// deadline kept) and ready or degraded ones.
func (s *Service) resume(ctx context.Context) error {
	recs, err := s.out.records(ctx)
	if err != nil {
		return err
	}
	n := 0
	for _, rec := range recs {
		if rec.Phase == phaseFailed {
			continue
		}
		e, err := s.opts.Names.Decode(rec.Subject, nil, rec.Applied)
		if err != nil {
			s.log.Error().Err(err).Str("release", rec.Release).Msg("unreadable record: not resumed")
			continue
		}
		a, err := events.Data[events.Applied](e)
		if err != nil {
			continue
		}
		rel, err := events.ReleaseOf(e)
		if err != nil {
			continue
		}
		t := s.newTracker(rel, rec, e, a)
		t.resumed = true
		s.track(t)
		n++
	}
	if n > 0 {
		s.log.Info().Int("releases", n).Msg("resumed")
	}
	return nil
}
