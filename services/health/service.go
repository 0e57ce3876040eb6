package health

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/util/workqueue"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/access"
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
	// LeaseTTL is how long the lease that makes a replica the one that watches outlives the
	// replica's last renewal (it renews every third of it): how long after a crash another
	// replica takes over. Default 15s.
	LeaseTTL time.Duration
	// Holder names this replica in the lease. Default health/<host>/<pid>.
	Holder string
	// Subscriber tunes the consumer; Service, Types, Produces, FailStage, Logger and Metrics are
	// set by New. Its TracerProvider traces what the watcher publishes too (outbox).
	Subscriber events.SubscriberConfig
	Names      events.Names // the system it works in: the live one (zero value) or a sandbox
	Version    string
	Logger     *zerolog.Logger
	Metrics    *events.Metrics
}

// watcher follows releases for one term of leadership: built when the replica takes the lease,
// it resumes what the KV bucket records, handles events, and is dropped with all its trackers
// when the term ends (the lease lost or the service stopped). A new term starts afresh from the
// bucket, as a restarted process does.
//
// Each release has one worker at a time: the client-go workqueue hands a release to one worker
// until it is done with it. Event handlers and watches never touch a tracker's state; they ask
// the release's worker (ask, tell) or queue the release (a watched object changed). The worker
// delivers what was decided and is not out yet, runs what handlers asked, then judges the
// revision followed (evaluate) and hands the decision to the outbox.
type watcher struct {
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
	o.LeaseTTL = max(cmp.Or(o.LeaseTTL, defaultLeaseTTL), events.MinLeaseTTL)
	if o.Holder == "" {
		host, _ := os.Hostname()
		o.Holder = fmt.Sprintf("%s/%s/%d", Name, host, os.Getpid())
	}
	s := &Service{opts: o, js: js, log: zerolog.Nop(), ready: make(chan struct{})}
	if o.Logger != nil {
		s.log = *o.Logger
	}
	var err error
	if s.out, err = newOutbox(ctx, js, o.Names, s.log, o.Subscriber.TracerProvider); err != nil {
		return nil, err
	}
	if s.leases, err = events.NewLeases(ctx, js, o.Names, o.Holder); err != nil {
		return nil, err
	}
	// Uncompressed: a watch is a stream of small events, each gzipped by the API server and
	// gunzipped here for bandwidth a watcher next to its API server does not need (in `make
	// bench-scale`, 1.8 of health's 28 CPU-seconds went to gunzip alone).
	cfg = rest.CopyConfig(cfg)
	cfg.DisableCompression = true
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	s.mapper = restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	if s.dyn, err = dynamic.NewForConfig(cfg); err != nil {
		return nil, err
	}
	// Pods, ReplicaSets and the workloads, many and changing often while releases roll out, are
	// read in protobuf, which costs the API server a fraction of JSON to encode (and it encodes
	// each change once for every protobuf watcher, the controllers among them): pods and
	// workloads typed, ReplicaSets as their metadata only (all health reads of them).
	proto := rest.CopyConfig(cfg)
	proto.ContentType, proto.AcceptContentTypes = runtime.ContentTypeProtobuf, runtime.ContentTypeProtobuf+","+runtime.ContentTypeJSON
	if s.typed, err = kubernetes.NewForConfig(proto); err != nil {
		return nil, err
	}
	if s.meta, err = metadata.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if _, err := s.newWatcher(); err != nil { // the subscriber's configuration, checked now
		return nil, err
	}
	return s, nil
}

// newWatcher is a watcher for one term, with nothing followed yet.
func (s *Service) newWatcher() (*watcher, error) {
	w := &watcher{opts: s.opts, log: s.log, out: s.out, mapper: s.mapper, releases: map[events.Release]*tracker{},
		byObject: map[objectKey][]*tracker{}, byNamespace: map[string][]*tracker{},
		inbox: map[events.Release][]func(context.Context){},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[events.Release](retryFirst, retryMax),
			workqueue.TypedRateLimitingQueueConfig[events.Release]{Name: Name})}
	w.watches = newWatches(clients{dyn: s.dyn, typed: s.typed, meta: s.meta}, w.changed, w.synced)
	sc := s.opts.Subscriber
	sc.Service, sc.Version, sc.Names = Name, s.opts.Version, s.opts.Names
	sc.Types = []string{events.TypeApplied, events.TypeHooked, events.TypeUninstalled, events.TypeRendered, events.TypeFailed, events.TypeSuperseded}
	sc.Produces = access.Publishes(access.Health) // what its NATS identity may publish
	sc.FailStage, sc.Logger, sc.Metrics = events.StageHealth, s.opts.Logger, s.opts.Metrics
	var err error
	if w.sub, err = events.NewSubscriber(s.js, sc, w.handle); err != nil {
		return nil, err
	}
	return w, nil
}

// run resumes the releases the KV bucket says are followed, then handles events until ctx
// ends. The workers outlive the subscriber's drain: a handler still running waits for one.
// Everything followed is let go when it returns.
func (s *watcher) run(ctx context.Context) error {
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

func (s *watcher) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.releases {
		s.untrackLocked(t)
	}
	s.watches.stopAll()
}

func (s *watcher) handle(ctx context.Context, e event.Event) error {
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
	case events.TypeHooked:
		h, err := events.Data[events.Hooked](e)
		if err != nil {
			return events.Terminal(err)
		}
		return s.ask(ctx, rel, func(ctx context.Context) error { return s.hooksRan(ctx, rel, events.Revision(e), h.Phase) })
	case events.TypeUninstalled:
		d, _ := events.DeliveryFrom(ctx)
		return s.ask(ctx, rel, func(ctx context.Context) error { return s.forget(ctx, rel, d.Sequence, events.CorrelationID(e)) })
	}
	return events.Terminalf("health: unexpected %s", e.Type())
}

// ask has rel's worker run f after what it has to do for rel already, and returns f's error,
// or ctx's if it ends first (f may then still run: what it does is idempotent).
func (s *watcher) ask(ctx context.Context, rel events.Release, f func(context.Context) error) error {
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
func (s *watcher) tell(rel events.Release, f func(context.Context)) {
	s.mu.Lock()
	s.inbox[rel] = append(s.inbox[rel], f)
	s.mu.Unlock()
	s.queue.Add(rel)
}

func (s *watcher) work(ctx context.Context) {
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
func (s *watcher) sync(ctx context.Context, rel events.Release) error {
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
func (s *watcher) flush(ctx context.Context, rel events.Release) error {
	if t := s.tracker(rel); t != nil && t.pending != nil && !t.pending.expendable() {
		return s.deliver(ctx, t)
	}
	return nil
}

// deliver hands t's pending decision to the outbox and, once it is out, moves t on.
func (s *watcher) deliver(ctx context.Context, t *tracker) error {
	err := s.out.deliver(ctx, t, t.pending)
	if errors.Is(err, errStale) {
		s.log.Warn().Err(err).Str("release", t.rel.String()).Msg("not the one to act: let go")
		t.pending = nil
		s.untrack(t)
		return nil
	}
	if err != nil {
		return err
	}
	s.settle(t, t.pending.next)
	t.pending = nil
	return nil
}

// casAttempts bounds how often a compare-and-set on a release's record that lost to another
// writer is tried again, from a fresh read, before the event is left to redelivery.
const casAttempts = 5

// follow starts following the revision applied, unless its release.applied is one the bucket
// has followed already, or older: its wait is over before it began. The older revision it
// replaces, if still progressing, is superseded — whether this watcher followed it or only the
// record says so (another replica did). The record is written before the event is acked, over
// the one read (compare-and-set): a restart resumes the revision.
func (s *watcher) follow(ctx context.Context, rel events.Release, rec record, applied event.Event, a *events.Applied) error {
	for attempt := 1; ; attempt++ {
		err := s.followOnce(ctx, rel, rec, applied, a)
		if !errors.Is(err, errStale) || attempt == casAttempts {
			return err
		}
	}
}

func (s *watcher) followOnce(ctx context.Context, rel events.Release, rec record, applied event.Event, a *events.Applied) error {
	prev, rev, err := s.out.recorded(ctx, rel)
	if err != nil {
		return err
	}
	if prev != nil && prev.Sequence >= rec.Sequence && rec.Sequence > 0 {
		if prev.Sequence == rec.Sequence {
			// A redelivery. Followed already, unless this watcher has no tracker of it: the
			// record was written but the answer lost (the NATS node it went to died with it), so
			// the first delivery failed before it tracked. Follow it from the record, as a restart
			// would, or nobody ever ends it.
			if t := s.tracker(rel); t != nil && t.rec.Sequence == rec.Sequence {
				return nil
			}
			if prev.Phase == phaseFailed {
				return nil
			}
			t, err := s.resumed(revisioned{*prev, rev})
			if err != nil {
				return events.Terminal(err)
			}
			if old := s.tracker(rel); old != nil {
				s.untrack(old) // an older revision's: its release.superseded went out before the record
			}
			s.track(t)
			return nil
		}
		return s.out.publish(ctx, applied, true, outgoing{typ: events.TypeSuperseded,
			data: events.Superseded{ByRevision: prev.Revision, Stage: events.StageHealth}})
	}
	if err := s.flush(ctx, rel); err != nil { // what a request before this one left
		return err
	}
	old := s.tracker(rel)
	if old == nil && prev != nil && waiting(prev.Phase) {
		old, _ = s.resumed(revisioned{*prev, rev}) // followed by another replica: superseded here
	}
	if old != nil {
		st := old.state
		st.supersededBy = rec.Revision
		old.pending = &delivery{decision: evaluate(st, observation{}, time.Now(), s.opts.ProgressInterval)}
		if err := s.deliver(ctx, old); err != nil {
			return err // the worker tries old's release.superseded again; the event is redelivered
		}
	}
	kvRev, err := s.out.update(ctx, rec, rev)
	if err != nil {
		return err
	}
	t := s.newTracker(rel, rec, applied, a)
	t.kvRev = kvRev
	s.track(t)
	return nil
}

// hooksRan notes that the post-phase hooks of rel's revision ran, in its record first (so that a
// restart before release.ready is out still knows), for the next judgement to say ready. A
// release.hooked of a pre phase, or of a revision not followed, changes nothing.
func (s *watcher) hooksRan(ctx context.Context, rel events.Release, revision int, phase string) error {
	t := s.tracker(rel)
	if t == nil || t.rec.Revision != revision || t.state.postHooks != phase || t.state.hooksDone {
		return nil
	}
	st := t.state
	st.hooksDone = true
	rev, err := s.out.update(ctx, t.record(st), t.kvRev)
	if errors.Is(err, errStale) {
		s.untrack(t)
		return nil
	}
	if err != nil {
		return err
	}
	t.kvRev, t.state.hooksDone = rev, true
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
func (s *watcher) replacing(rel events.Release, revision int, on bool) {
	if t := s.tracker(rel); t != nil && (on || revision != t.rec.Revision) {
		t.state.replacing = on
	}
}

// forget lets rel go: it was uninstalled by the release.uninstalled at stream sequence seq, which
// ends the flow of the release.uninstall.requested uninstall. A revision still progressing is
// superseded by the uninstall first: its wait ends now, not at its deadline. Then the record
// goes (compare-and-set): a restart must not resume it. A record of a revision applied after
// the uninstall (the release installed again) stays, and so does its tracker.
func (s *watcher) forget(ctx context.Context, rel events.Release, seq uint64, uninstall string) error {
	for attempt := 1; ; attempt++ {
		prev, rev, err := s.out.recorded(ctx, rel)
		if err != nil {
			return err
		}
		if prev == nil && attempt < casAttempts {
			// No record, says the replica that answered: the leader's word, before letting go.
			if _, lrev, err := events.LeaderGet(ctx, s.out.js, s.opts.Names.KV(events.KVHealth), key(rel)); err == nil && lrev > 0 {
				continue
			}
		}
		if prev != nil && seq > 0 && prev.Sequence > seq {
			return nil
		}
		if prev != nil && waiting(prev.Phase) {
			if err := s.supersedeByUninstall(ctx, rel, revisioned{*prev, rev}, uninstall); err != nil {
				return err
			}
		}
		if rev > 0 {
			err = s.out.forget(ctx, rel, rev)
		}
		if errors.Is(err, errStale) && attempt < casAttempts {
			continue
		}
		if err != nil {
			return err
		}
		break
	}
	if t := s.tracker(rel); t != nil && (seq == 0 || t.rec.Sequence < seq) {
		s.untrack(t)
	}
	return nil
}

// supersedeByUninstall publishes release.superseded (by uninstall) for the progressing revision
// rec records, with this watcher's tracker of it, or one resumed from rec (another replica
// followed it). A tracker no longer current publishes nothing: the record changed, and the
// caller reads it again.
func (s *watcher) supersedeByUninstall(ctx context.Context, rel events.Release, rec revisioned, uninstall string) error {
	t := s.tracker(rel)
	if t == nil || t.rec.Sequence != rec.Sequence || t.kvRev != rec.kvRev {
		var err error
		if t, err = s.resumed(rec); err != nil {
			return nil // unreadable: nothing to end it with; the deadline watchdog will
		}
	}
	st := t.state
	st.uninstalledBy = uninstall
	t.pending = &delivery{decision: evaluate(st, observation{}, time.Now(), s.opts.ProgressInterval)}
	return s.deliver(ctx, t)
}

// resume follows again what the KV bucket says is followed: revisions still progressing (their
// deadline kept) and ready or degraded ones.
func (s *watcher) resume(ctx context.Context) error {
	recs, err := s.out.records(ctx)
	if err != nil {
		return err
	}
	n := 0
	for _, rec := range recs {
		if rec.Phase == phaseFailed {
			continue
		}
		t, err := s.resumed(rec)
		if err != nil {
			s.log.Error().Err(err).Str("release", rec.Release).Msg("unreadable record: not resumed")
			continue
		}
		s.track(t)
		n++
	}
	if n > 0 {
		s.log.Info().Int("releases", n).Msg("resumed")
	}
	return nil
}

// resumed is the tracker of the revision rec records, not tracked yet: its terminal event may be
// out already.
func (s *watcher) resumed(rec revisioned) (*tracker, error) {
	e, err := s.opts.Names.Decode(rec.Subject, nil, rec.Applied)
	if err != nil {
		return nil, err
	}
	a, err := events.Data[events.Applied](e)
	if err != nil {
		return nil, err
	}
	rel, err := events.ReleaseOf(e)
	if err != nil {
		return nil, err
	}
	t := s.newTracker(rel, rec.record, e, a)
	t.resumed, t.kvRev = true, rec.kvRev
	return t, nil
}
