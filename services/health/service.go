package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/troupe-dev/troupe/events"
)

// Name is the service's name: its durable consumer and its source troupe/health.
const Name = "health"

const source = events.SourcePrefix + Name

// releaseLabel is the label the applier puts on every object it applies: the inventory watches
// select on it, so they hold troupe's objects only.
const releaseLabel = "troupe.dev/release"

// Phases of a followed revision, as the KV record keeps them.
const (
	phaseProgressing = "progressing"
	phaseReady       = "ready"
	phaseDegraded    = "degraded"
	phaseFailed      = "failed"
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
type Service struct {
	opts    Options
	log     zerolog.Logger
	kv      jetstream.KeyValue
	stream  jetstream.Stream
	pub     *events.Publisher
	sub     *events.Subscriber
	mapper  meta.ResettableRESTMapper
	watches *watches
	locks   keyedMutex

	mu          sync.Mutex
	releases    map[events.Release]*tracker
	byObject    map[objectKey][]*tracker
	byNamespace map[string][]*tracker // releases whose pods are watched, by namespace
	dirty       map[*tracker]bool
	wake        chan struct{}
	out         [8]chan func()
}

type objectKey struct {
	gvr             schema.GroupVersionResource
	namespace, name string
}

// tracked is one object of a followed revision.
type tracked struct {
	ref      events.ObjectRef
	key      watchKey
	gvr      schema.GroupVersionResource
	workload bool
}

// tracker follows one revision of one release.
type tracker struct {
	rel       events.Release
	rec       record
	cause     event.Event // the release.applied
	objects   []tracked
	requested time.Time
	deadline  time.Time
	resumed   bool // followed again after a restart: a terminal event may be out already
	gone      bool
	// replacing is set while another revision of the release is on its way to the cluster
	// (rendered, not applied yet): its objects changing then is no degradation of this one.
	replacing bool

	statuses     []events.ObjectStatus
	published    []events.ObjectStatus // in the last progressing event
	degraded     []events.ObjectStatus // in the last degraded event
	lastProgress time.Time
	progressDue  *time.Timer
	timeout      *time.Timer
	podWatches   []string // namespaces
	watchKeys    []watchKey
}

// record is what the KV bucket keeps per release, for a restarted watcher to resume.
type record struct {
	Release      string          `json:"release"`
	Revision     int             `json:"revision"`
	Sequence     uint64          `json:"sequence"` // of the release.applied in the stream
	Subject      string          `json:"subject"`  // the NATS subject of the release.applied
	Applied      json.RawMessage `json:"applied"`  // the release.applied, as the stream has it
	Phase        string          `json:"phase"`
	Progress     int             `json:"progress"`
	Degradations int             `json:"degradations"`
}

// New opens what the service shares through NATS (made by events.Provision) and returns the
// service for the cluster cfg reaches, ready to Start.
func New(ctx context.Context, js jetstream.JetStream, cfg *rest.Config, o Options) (*Service, error) {
	if o.ProgressInterval <= 0 {
		o.ProgressInterval = time.Second
	}
	s := &Service{opts: o, pub: events.NewPublisher(js, o.Names), releases: map[events.Release]*tracker{},
		byObject: map[objectKey][]*tracker{}, byNamespace: map[string][]*tracker{}, dirty: map[*tracker]bool{},
		wake: make(chan struct{}, 1)}
	s.log = zerolog.Nop()
	if o.Logger != nil {
		s.log = *o.Logger
	}
	var err error
	if s.kv, err = js.KeyValue(ctx, o.Names.KV(events.KVHealth)); err != nil {
		return nil, fmt.Errorf("health: kv %s: %w", o.Names.KV(events.KVHealth), err)
	}
	if s.stream, err = js.Stream(ctx, o.Names.Stream()); err != nil {
		return nil, fmt.Errorf("health: stream %s: %w", o.Names.Stream(), err)
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
// ends.
func (s *Service) Start(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for i := range s.out {
		s.out[i] = make(chan func(), 1024)
		wg.Go(func() {
			for {
				select {
				case f := <-s.out[i]:
					f()
				case <-ctx.Done():
					return
				}
			}
		})
	}
	wg.Go(func() { s.evaluateLoop(ctx) })
	defer s.stop()
	if err := s.resume(ctx); err != nil {
		return err
	}
	return s.sub.Start(ctx)
}

// Ready is closed once the service receives events.
func (s *Service) Ready() <-chan struct{} { return s.sub.Ready() }

// Watches is the number of watches running (informers: kinds × namespaces).
func (s *Service) Watches() int { return s.watches.count() }

func (s *Service) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.releases {
		s.untrack(t)
	}
	s.watches.stopAll()
}

func (s *Service) handle(ctx context.Context, e event.Event) error {
	rel, err := events.ReleaseOf(e)
	if err != nil {
		return events.Terminal(err)
	}
	unlock := s.locks.lock(rel.String())
	defer unlock()
	switch e.Type() {
	case events.TypeApplied:
		a, err := events.Data[events.Applied](e)
		if err != nil {
			return events.Terminal(err)
		}
		d, _ := events.DeliveryFrom(ctx)
		return s.applied(ctx, e, rel, a, d.Sequence)
	case events.TypeRendered, events.TypeFailed, events.TypeSuperseded:
		s.replacing(e, rel)
		return nil
	case events.TypeUninstalled:
		s.mu.Lock()
		if t := s.releases[rel]; t != nil {
			s.untrack(t)
		}
		s.mu.Unlock()
		if err := s.kv.Delete(ctx, key(rel)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return err
		}
		return nil
	}
	return events.Terminalf("health: unexpected %s", e.Type())
}

// replacing notes that another revision of rel is on its way to the cluster (a real
// release.rendered, a rollback's too), or that it will not come after all (its release.failed
// before health, its release.superseded).
func (s *Service) replacing(e event.Event, rel events.Release) {
	on := false
	switch e.Type() {
	case events.TypeRendered:
		r, err := events.Data[events.Rendered](e)
		if err != nil || r.Options.DryRun {
			return
		}
		on = true
	case events.TypeFailed:
		if f, err := events.Data[events.Failed](e); err != nil || f.Stage == events.StageHealth {
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.releases[rel]
	if t == nil || events.Revision(e) == t.rec.Revision && !on {
		return
	}
	t.replacing = on
	s.markDirtyLocked(t)
}

// applied starts following the revision e applied, unless the stream has a newer one already;
// the older revision it replaces, if still progressing, is superseded.
func (s *Service) applied(ctx context.Context, e event.Event, rel events.Release, a *events.Applied, seq uint64) error {
	prev, err := s.record(ctx, rel)
	if err != nil {
		return err
	}
	if prev != nil && prev.Sequence >= seq && seq > 0 {
		if prev.Sequence == seq {
			return nil // a redelivery: followed already
		}
		// Delivered after a newer release.applied of the release: its wait is over before it began.
		if err := s.publish(ctx, e, events.TypeSuperseded, events.Superseded{ByRevision: prev.Revision, Stage: events.StageHealth}); err != nil {
			return err
		}
		return nil
	}
	raw, err := events.Encode(e)
	if err != nil {
		return events.Terminal(err)
	}
	subject, err := s.opts.Names.Subject(rel, events.TypeApplied)
	if err != nil {
		return events.Terminal(err)
	}
	t := &tracker{rel: rel, cause: e, rec: record{Release: rel.String(), Revision: events.Revision(e), Sequence: seq,
		Subject: subject, Applied: raw, Phase: phaseProgressing}}
	s.prepare(t, a)
	s.mu.Lock()
	if old := s.releases[rel]; old != nil {
		if old.rec.Phase == phaseProgressing {
			s.emit(old, events.TypeSuperseded, events.Superseded{ByRevision: t.rec.Revision, Stage: events.StageHealth}, "", nil)
		}
		s.untrack(old)
	}
	// Recorded in the release's queue, after whatever the older revision still has to write,
	// and before the event is acked: a restart resumes this revision.
	written, rec := make(chan error, 1), t.rec
	s.enqueue(rel, func(ctx context.Context) { written <- s.put(ctx, rec) })
	s.track(t)
	s.mu.Unlock()
	select {
	case err := <-written:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// prepare fills t's objects (kinds resolved to resources), request time and deadline from the
// release.applied.
func (s *Service) prepare(t *tracker, a *events.Applied) {
	t.requested = events.RequestTime(t.cause)
	if t.requested.IsZero() {
		t.requested = t.cause.Time()
	}
	timeout := time.Duration(a.Options.Timeout)
	if timeout <= 0 {
		timeout = events.DefaultTimeout
	}
	t.deadline = t.requested.Add(timeout)
	for _, o := range a.Inventory {
		gv, _ := schema.ParseGroupVersion(o.APIVersion)
		tr := tracked{ref: o.ObjectRef, workload: isWorkload(gv.Group, o.Kind)}
		if m, err := s.mapping(gv.WithKind(o.Kind)); err == nil {
			tr.gvr = m.Resource
			tr.key = watchKey{gvr: m.Resource}
			if s.opts.PerNamespace && m.Scope.Name() == meta.RESTScopeNameNamespace {
				tr.key.namespace = o.Namespace
			}
		}
		t.objects = append(t.objects, tr)
	}
}

func (s *Service) mapping(gvk schema.GroupVersionKind) (*meta.RESTMapping, error) {
	m, err := s.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil && meta.IsNoMatchError(err) {
		s.mapper.Reset() // a CRD installed since discovery was read
		m, err = s.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	return m, err
}

// track registers t: its watches, its index entries, its timeout. Caller holds s.mu.
func (s *Service) track(t *tracker) {
	s.releases[t.rel] = t
	seen := map[watchKey]bool{}
	for _, o := range t.objects {
		if o.gvr.Empty() {
			continue
		}
		if !seen[o.key] {
			seen[o.key] = true
			t.watchKeys = append(t.watchKeys, o.key)
			s.watches.acquire(o.key, releaseLabel)
		}
		k := objectKey{gvr: o.gvr, namespace: o.ref.Namespace, name: o.ref.Name}
		s.byObject[k] = append(s.byObject[k], t)
	}
	if t.rec.Phase == phaseProgressing {
		s.watchPods(t)
		t.timeout = time.AfterFunc(time.Until(t.deadline), func() { s.markDirty(t) })
	}
	s.markDirtyLocked(t)
}

// untrack lets t go: watches released, index entries and timers removed. Caller holds s.mu.
func (s *Service) untrack(t *tracker) {
	if t.gone {
		return
	}
	t.gone = true
	if s.releases[t.rel] == t {
		delete(s.releases, t.rel)
	}
	for _, k := range t.watchKeys {
		s.watches.release(k)
	}
	for _, o := range t.objects {
		k := objectKey{gvr: o.gvr, namespace: o.ref.Namespace, name: o.ref.Name}
		s.byObject[k] = without(s.byObject[k], t)
		if len(s.byObject[k]) == 0 {
			delete(s.byObject, k)
		}
	}
	s.unwatchPods(t)
	if t.timeout != nil {
		t.timeout.Stop()
	}
	if t.progressDue != nil {
		t.progressDue.Stop()
	}
	delete(s.dirty, t)
}

// watchPods watches the pods and ReplicaSets of the namespaces of t's workloads, while t
// progresses: what fails it fast.
func (s *Service) watchPods(t *tracker) {
	for _, o := range t.objects {
		if !o.workload || containsString(t.podWatches, o.ref.Namespace) {
			continue
		}
		ns := o.ref.Namespace
		t.podWatches = append(t.podWatches, ns)
		s.watches.acquire(watchKey{gvr: podsGVR, namespace: ns}, "")
		s.watches.acquire(watchKey{gvr: replicaSetsGVR, namespace: ns}, "")
		s.byNamespace[ns] = append(s.byNamespace[ns], t)
	}
}

func (s *Service) unwatchPods(t *tracker) {
	for _, ns := range t.podWatches {
		s.watches.release(watchKey{gvr: podsGVR, namespace: ns})
		s.watches.release(watchKey{gvr: replicaSetsGVR, namespace: ns})
		s.byNamespace[ns] = without(s.byNamespace[ns], t)
		if len(s.byNamespace[ns]) == 0 {
			delete(s.byNamespace, ns)
		}
	}
	t.podWatches = nil
}

// changed is called by the watches for every change of a watched object.
func (s *Service) changed(key watchKey, obj *unstructured.Unstructured) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if key.gvr == podsGVR || key.gvr == replicaSetsGVR {
		for _, t := range s.byNamespace[obj.GetNamespace()] {
			s.markDirtyLocked(t)
		}
		return
	}
	for _, t := range s.byObject[objectKey{gvr: key.gvr, namespace: obj.GetNamespace(), name: obj.GetName()}] {
		s.markDirtyLocked(t)
	}
}

// synced is called by the watches once a watch has listed what exists: the releases using it
// can be judged now, even if nothing changes.
func (s *Service) synced(key watchKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.releases {
		if containsKey(t.watchKeys, key) || (key.gvr == podsGVR || key.gvr == replicaSetsGVR) && containsString(t.podWatches, key.namespace) {
			s.markDirtyLocked(t)
		}
	}
}

func (s *Service) markDirty(t *tracker) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.markDirtyLocked(t)
}

func (s *Service) markDirtyLocked(t *tracker) {
	if t.gone {
		return
	}
	s.dirty[t] = true
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Service) evaluateLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		s.mu.Lock()
		dirty := s.dirty
		s.dirty = map[*tracker]bool{}
		for t := range dirty {
			if !t.gone {
				s.evaluate(t)
			}
		}
		s.mu.Unlock()
	}
}

// evaluate judges t from what the watches hold, and publishes what changed: progress
// (throttled), ready, failed (fast, or at the deadline), degraded, recovered. Caller holds s.mu.
func (s *Service) evaluate(t *tracker) {
	now := time.Now()
	statuses := make([]events.ObjectStatus, len(t.objects))
	observed, allCurrent := true, true
	var failing []events.ObjectStatus
	var reason string
	for i, o := range t.objects {
		r, ok := s.statusOf(t, o)
		observed = observed && ok
		statuses[i] = events.ObjectStatus{ObjectRef: o.ref, Status: r.Status, Message: events.Truncate(r.Message, events.MaxMessageLength)}
		if r.Status != current {
			allCurrent = false
		}
		if r.Status == failed {
			failing = append(failing, statuses[i])
			if reason == "" {
				reason = r.Reason
			}
		}
	}
	t.statuses = statuses
	switch t.rec.Phase {
	case phaseProgressing:
		switch {
		case observed && allCurrent:
			t.rec.Phase = phaseReady
			s.unwatchPods(t)
			t.timeout.Stop()
			s.emit(t, events.TypeReady, events.Ready{TimeToReady: events.Duration(now.Sub(t.requested)), Objects: len(t.objects)}, "", &t.rec)
		case len(failing) > 0:
			s.fail(t, reason, describe(failing), failing) // the release, revision and reason are beside it
		case now.After(t.deadline):
			var waiting []events.ObjectStatus
			for _, st := range statuses {
				if st.Status != current {
					waiting = append(waiting, st)
				}
			}
			s.fail(t, ReasonTimeout, fmt.Sprintf("not ready after %s: %s", t.deadline.Sub(t.requested).Round(time.Second), describe(waiting)), waiting)
		default:
			s.progress(t, now)
		}
	case phaseReady:
		if !observed || allCurrent || t.replacing {
			return
		}
		var bad []events.ObjectStatus
		for _, st := range statuses {
			if st.Status != current {
				bad = append(bad, st)
			}
		}
		t.rec.Phase = phaseDegraded
		t.rec.Degradations++
		t.degraded = bad
		s.emit(t, events.TypeDegraded, events.Degraded{Objects: bad}, strconv.Itoa(t.rec.Degradations), &t.rec)
	case phaseDegraded:
		if observed && allCurrent {
			t.rec.Phase = phaseReady
			var back []events.ObjectStatus
			for _, d := range t.degraded {
				for _, st := range statuses {
					if st.ObjectRef == d.ObjectRef {
						back = append(back, st)
					}
				}
			}
			if len(back) == 0 {
				back = statuses
			}
			s.emit(t, events.TypeRecovered, events.Recovered{Objects: back}, strconv.Itoa(t.rec.Degradations), &t.rec)
		}
	}
}

func (s *Service) fail(t *tracker, reason, message string, objects []events.ObjectStatus) {
	t.rec.Phase = phaseFailed
	if len(objects) > 100 {
		objects = objects[:100]
	}
	s.emit(t, events.TypeFailed, events.Failed{Stage: events.StageHealth, Reason: reason,
		Message: events.Truncate(message, events.MaxMessageLength), Objects: objects}, "", &t.rec)
	s.untrack(t)
}

// progress publishes release.progressing when the statuses changed since the last one, at most
// once per ProgressInterval (later, when sooner).
func (s *Service) progress(t *tracker, now time.Time) {
	if sameStatuses(t.published, t.statuses) {
		return
	}
	if wait := t.lastProgress.Add(s.opts.ProgressInterval).Sub(now); wait > 0 {
		if t.progressDue == nil {
			t.progressDue = time.AfterFunc(wait, func() {
				s.mu.Lock()
				t.progressDue = nil
				s.markDirtyLocked(t)
				s.mu.Unlock()
			})
		}
		return
	}
	t.lastProgress, t.published = now, t.statuses
	t.rec.Progress++
	ready := 0
	for _, st := range t.statuses {
		if st.Status == current {
			ready++
		}
	}
	objects := t.statuses
	if len(objects) > 10000 {
		objects = objects[:10000]
	}
	s.emit(t, events.TypeProgressing, events.Progressing{Objects: objects, Ready: ready, Total: len(t.statuses)},
		strconv.Itoa(t.rec.Progress), nil)
}

// statusOf is one object's health; ok is false while a watch it needs has not listed yet.
func (s *Service) statusOf(t *tracker, o tracked) (result, bool) {
	if o.gvr.Empty() {
		return result{Status: unknown, Message: fmt.Sprintf("the cluster serves no %s %s", o.ref.APIVersion, o.ref.Kind)}, true
	}
	obj, ok := s.watches.get(o.key, o.ref.Namespace, o.ref.Name)
	if !ok {
		msg := "not observed yet"
		if err := s.watches.failure(o.key); err != nil {
			msg = fmt.Sprintf("cannot watch %s: %v", o.gvr.GroupResource(), err)
		}
		return result{Status: unknown, Message: msg}, false
	}
	var pods []*unstructured.Unstructured
	if obj != nil && o.workload && containsString(t.podWatches, o.ref.Namespace) {
		pk, rk := watchKey{gvr: podsGVR, namespace: o.ref.Namespace}, watchKey{gvr: replicaSetsGVR, namespace: o.ref.Namespace}
		pods = podsOf(obj, func(uid string) []*unstructured.Unstructured {
			return append(s.watches.owned(rk, uid), s.watches.owned(pk, uid)...)
		})
	}
	return compute(obj, pods), true
}

// emit publishes one event of t's, derived from its release.applied, and then writes rec (when
// given) to the KV bucket — in order per release, off the evaluation path. Caller holds s.mu.
func (s *Service) emit(t *tracker, typ string, data any, key string, rec *record) {
	cause, resumed := t.cause, t.resumed
	var snapshot *record
	if rec != nil {
		c := *rec
		snapshot = &c
	}
	s.enqueue(t.rel, func(ctx context.Context) {
		terminal := typ == events.TypeReady || typ == events.TypeFailed || typ == events.TypeSuperseded
		if !(resumed && terminal && s.publishedAlready(ctx, cause, typ)) {
			var keys []string
			if key != "" {
				keys = []string{key}
			}
			out, err := events.Derive(cause, source, typ, data, keys...)
			if err == nil {
				_, err = s.pub.Publish(ctx, out)
			}
			if err != nil {
				s.log.Error().Err(err).Str("release", t.rel.String()).Str("type", typ).Msg("publish")
			} else {
				s.log.Info().Str("release", t.rel.String()).Int("revision", events.Revision(cause)).Str("type", typ).Msg("published")
			}
		}
		if snapshot != nil {
			if err := s.put(ctx, *snapshot); err != nil {
				s.log.Error().Err(err).Str("release", t.rel.String()).Msg("record")
			}
		}
	})
}

// enqueue runs f after everything enqueued before for rel: one queue per release (a few
// releases share each), so a release's events and records are written in order.
func (s *Service) enqueue(rel events.Release, f func(context.Context)) {
	h := fnv.New32a()
	h.Write([]byte(rel.String()))
	s.out[h.Sum32()%uint32(len(s.out))] <- func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		f(ctx)
	}
}

// publishedAlready says whether the stream's last typ event of cause's release answers cause:
// a watcher that restarted between publishing a terminal event and recording it must not
// publish a second one.
func (s *Service) publishedAlready(ctx context.Context, cause event.Event, typ string) bool {
	rel, err := events.ReleaseOf(cause)
	if err != nil {
		return false
	}
	subject, err := s.opts.Names.Subject(rel, typ)
	if err != nil {
		return false
	}
	m, err := s.stream.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		return false
	}
	e, err := s.opts.Names.Decode(m.Subject, m.Header, m.Data)
	return err == nil && events.CausationID(e) == cause.ID()
}

// publish publishes the service's reaction to e right away.
func (s *Service) publish(ctx context.Context, e event.Event, typ string, data any) error {
	out, err := events.Derive(e, source, typ, data)
	if err != nil {
		return events.Terminal(err)
	}
	_, err = s.pub.Publish(ctx, out)
	return err
}

// resume follows again what the KV bucket says is followed: revisions still progressing (their
// deadline kept) and ready or degraded ones.
func (s *Service) resume(ctx context.Context) error {
	keys, err := s.kv.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("health: list %s: %w", s.opts.Names.KV(events.KVHealth), err)
	}
	n := 0
	for k := range keys.Keys() {
		entry, err := s.kv.Get(ctx, k)
		if err != nil {
			continue
		}
		var rec record
		if err := json.Unmarshal(entry.Value(), &rec); err != nil || rec.Phase == phaseFailed {
			continue
		}
		e, err := s.opts.Names.Decode(rec.Subject, nil, rec.Applied)
		if err != nil {
			s.log.Error().Err(err).Str("key", k).Msg("unreadable record: not resumed")
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
		t := &tracker{rel: rel, cause: e, rec: rec, resumed: true}
		s.prepare(t, a)
		s.mu.Lock()
		s.track(t)
		s.mu.Unlock()
		n++
	}
	if n > 0 {
		s.log.Info().Int("releases", n).Msg("resumed")
	}
	return nil
}

func (s *Service) record(ctx context.Context, rel events.Release) (*record, error) {
	entry, err := s.kv.Get(ctx, key(rel))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rec record
	if err := json.Unmarshal(entry.Value(), &rec); err != nil {
		return nil, nil // unreadable: followed anew
	}
	return &rec, nil
}

func (s *Service) put(ctx context.Context, rec record) error {
	rel, err := events.ParseRelease(rec.Release)
	if err != nil {
		return err
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	_, err = s.kv.Put(ctx, key(rel), data)
	return err
}

func key(rel events.Release) string { return rel.Namespace + "." + rel.Name }

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

func sameStatuses(a, b []events.ObjectStatus) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func without(ts []*tracker, t *tracker) []*tracker {
	out := ts[:0]
	for _, x := range ts {
		if x != t {
			out = append(out, x)
		}
	}
	return out
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func containsKey(ks []watchKey, k watchKey) bool {
	for _, x := range ks {
		if x == k {
			return true
		}
	}
	return false
}

// keyedMutex serialises the handling of one release's events.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*keyLock
}

type keyLock struct {
	sync.Mutex
	users int
}

func (k *keyedMutex) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*keyLock{}
	}
	l := k.locks[key]
	if l == nil {
		l = &keyLock{}
		k.locks[key] = l
	}
	l.users++
	k.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		k.mu.Lock()
		if l.users--; l.users == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}
