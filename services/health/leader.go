package health

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"

	"github.com/troupe-dev/troupe/events"
)

// leaseKey is the key of the troupe-leases bucket whose holder is the replica that watches.
const leaseKey = "health"

// defaultLeaseTTL is Options.LeaseTTL's default: a crashed leader's releases wait at most this
// long for another replica.
const defaultLeaseTTL = 15 * time.Second

// Service is the health watcher. Any number of replicas may run: one at a time leads — it holds
// the "health" lease of the troupe-leases bucket, renewed every third of Options.LeaseTTL — and
// consumes events and follows every release; the others stand by, trying for the lease. A leader
// that stops renewing (killed, cut off) loses the lease at most LeaseTTL later; a standby takes
// it then and resumes every release from the KV bucket, as a restarted watcher does. A leader
// that learns it lost the lease stops consuming and lets every release go. In the moment when
// two believe they lead, the outbox keeps a stale tracker from acting: it publishes a revision's
// end, degradation or recovery, and writes its record, only while the record is the one the
// tracker last read or wrote (compare-and-set on the key's revision) and the stream has no newer
// release.applied or release.uninstalled of the release.
type Service struct {
	opts   Options
	log    zerolog.Logger
	js     jetstream.JetStream
	out    *outbox
	leases *events.Leases
	mapper meta.ResettableRESTMapper
	dyn    dynamic.Interface
	typed  kubernetes.Interface // in protobuf: pods
	meta   metadata.Interface   // ReplicaSets

	ready     chan struct{}
	readyOnce sync.Once
	current   atomic.Pointer[watcher] // the term's watcher while leading
}

// Start runs until ctx ends: it stands by until it gets the lease, then leads — resumes what the
// KV bucket records and handles events — until ctx ends or the lease is lost, and stands by
// again after a lost lease. A failure to start a term (the consumer or the bucket unreachable)
// is returned; the lease is let go first.
func (s *Service) Start(ctx context.Context) error {
	for {
		lease := s.acquire(ctx)
		if lease == nil {
			return nil // ctx ended
		}
		err := s.lead(ctx, lease)
		if err != nil || ctx.Err() != nil {
			return err
		}
		s.log.Warn().Msg("lost the lease: standing by")
	}
}

// Ready is closed once the service leads and receives events, or stands by for the lease.
func (s *Service) Ready() <-chan struct{} { return s.ready }

// Watches is the number of watches the releases followed use (informers: kinds, × namespaces
// under PerNamespace; one of the cluster's pods lingers a while once unused, uncounted); 0
// while standing by.
func (s *Service) Watches() int {
	if w := s.current.Load(); w != nil {
		return w.watches.count()
	}
	return 0
}

// Receiving reports whether the service receives events now (serve.Receiver): a standby is
// ready without receiving; a leader not while its consumer is created again after it
// disappeared.
func (s *Service) Receiving() bool {
	if w := s.current.Load(); w != nil {
		return w.sub.Receiving()
	}
	return true
}

func (s *Service) markReady() { s.readyOnce.Do(func() { close(s.ready) }) }

// acquire takes the lease, trying again every quarter of its TTL while another replica holds it
// (or NATS does not answer); nil once ctx ended.
func (s *Service) acquire(ctx context.Context) *events.Lease {
	standingBy := false
	for {
		lease, err := s.leases.Acquire(ctx, leaseKey, s.opts.LeaseTTL, "health watcher")
		if err == nil {
			s.log.Info().Str("holder", s.opts.Holder).Msg("leading")
			return lease
		}
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, events.ErrLeaseHeld) {
			if !standingBy {
				s.log.Info().Err(err).Msg("standing by")
				standingBy = true
			}
			s.markReady()
		} else {
			s.log.Warn().Err(err).Msg("lease: trying again")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(s.opts.LeaseTTL / 4):
		}
	}
}

// lead runs one term under lease: a new watcher, until ctx ends or the lease is lost. The lease
// is renewed until the watcher has stopped (drained, every release let go), then released, so
// that a standby takes over at once after a shutdown.
func (s *Service) lead(ctx context.Context, lease *events.Lease) error {
	keep, stopKeeping := context.WithCancel(context.WithoutCancel(ctx))
	defer func() {
		stopKeeping()
		if err := lease.Release(context.WithoutCancel(ctx)); err != nil {
			s.log.Warn().Err(err).Msg("release the lease")
		}
	}()
	lost := lease.Keep(keep)
	term, end := context.WithCancel(ctx)
	defer end()
	go func() {
		select {
		case <-lost:
			s.log.Error().Msg("lease lost: stopping")
			end()
		case <-term.Done():
		}
	}()
	w, err := s.newWatcher()
	if err != nil {
		return err
	}
	go func() {
		select {
		case <-w.sub.Ready():
			s.markReady()
		case <-term.Done():
		}
	}()
	s.current.Store(w)
	defer s.current.Store(nil)
	return w.run(term)
}
