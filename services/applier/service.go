package applier

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"k8s.io/client-go/rest"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/services/applier/apply"
)

// Name is the service's name: its durable consumer and its source troupe/applier.
const Name = "applier"

const source = events.SourcePrefix + Name

// Reasons the service itself fails a revision with (the apply package has the cluster's).
const (
	ReasonBundleNotFound = "bundle_not_found"
	ReasonTimeout        = "timeout"
	ReasonInvalidEvent   = "invalid_event"
)

// Options configure the service.
type Options struct {
	Apply apply.Options
	// Concurrency bounds how many releases this replica works on at once (Apply.Concurrency
	// bounds their API requests together). Default 16.
	Concurrency int
	// LeaseTTL is how long a release stays locked by a replica that stops renewing (crashed).
	// Default 30s.
	LeaseTTL time.Duration
	// Holder names this replica in leases. Default applier/<host>/<pid>.
	Holder string
	// Subscriber tunes the consumer (deliveries, backoff, ack wait); Service, Types, Produces,
	// Concurrency, FailStage, Logger and Metrics are set by New.
	Subscriber events.SubscriberConfig
	Names      events.Names // the system it works in: the live one (zero value) or a sandbox
	Version    string
	Logger     *zerolog.Logger
	Metrics    *events.Metrics
}

// Service is the applier.
type Service struct {
	opts      Options
	applier   *apply.Applier
	bundles   *events.Objects
	revisions *events.Revisions
	leases    *events.Leases
	inventory *inventory
	stream    jetstream.Stream
	pub       *events.Publisher
	sub       *events.Subscriber
}

// New opens what the service shares through NATS (made by events.Provision) and returns the
// service for the cluster cfg reaches, ready to Start.
func New(ctx context.Context, js jetstream.JetStream, cfg *rest.Config, o Options) (*Service, error) {
	if o.Concurrency <= 0 {
		o.Concurrency = 16
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 30 * time.Second
	}
	if o.Holder == "" {
		host, _ := os.Hostname()
		o.Holder = fmt.Sprintf("%s/%s/%d", Name, host, os.Getpid())
	}
	s := &Service{opts: o, pub: events.NewPublisher(js, o.Names)}
	var err error
	if s.applier, err = apply.New(cfg, o.Apply); err != nil {
		return nil, err
	}
	if s.bundles, err = events.OpenObjects(ctx, js, events.BucketBundles); err != nil {
		return nil, err
	}
	if s.revisions, err = events.NewRevisions(ctx, js, o.Names); err != nil {
		return nil, err
	}
	if s.leases, err = events.NewLeases(ctx, js, o.Names, o.Holder); err != nil {
		return nil, err
	}
	if s.inventory, err = openInventory(ctx, js, o.Names); err != nil {
		return nil, err
	}
	if s.stream, err = js.Stream(ctx, o.Names.Stream()); err != nil {
		return nil, fmt.Errorf("applier: stream %s: %w", o.Names.Stream(), err)
	}
	sc := o.Subscriber
	sc.Service, sc.Version, sc.Names = Name, o.Version, o.Names
	sc.Types = []string{events.TypeRendered, events.TypeUninstallRequested}
	sc.Produces = []string{events.TypeApplied, events.TypeDiffed, events.TypeFailed, events.TypeSuperseded, events.TypeUninstalled}
	sc.Concurrency, sc.FailStage, sc.Logger, sc.Metrics = o.Concurrency, events.StageApply, o.Logger, o.Metrics
	if s.sub, err = events.NewSubscriber(js, sc, s.handle); err != nil {
		return nil, err
	}
	return s, nil
}

// Start handles events until ctx ends (see events.Subscriber.Start).
func (s *Service) Start(ctx context.Context) error { return s.sub.Start(ctx) }

// Ready is closed once the service receives events.
func (s *Service) Ready() <-chan struct{} { return s.sub.Ready() }

// Receiving reports whether the service receives events now (serve.Receiver): false while its
// consumer is created again after it disappeared.
func (s *Service) Receiving() bool { return s.sub.Receiving() }

func (s *Service) handle(ctx context.Context, e event.Event) error {
	rel, err := events.ReleaseOf(e)
	if err != nil {
		return events.Reject(ReasonInvalidEvent, err)
	}
	switch e.Type() {
	case events.TypeRendered:
		r, err := events.Data[events.Rendered](e)
		if err != nil {
			return events.Reject(ReasonInvalidEvent, err)
		}
		return s.rendered(ctx, e, rel, r)
	case events.TypeUninstallRequested:
		u, err := events.Data[events.UninstallRequested](e)
		if err != nil {
			return events.Reject(ReasonInvalidEvent, err)
		}
		return s.uninstall(ctx, e, rel, u)
	}
	return events.Terminalf("applier: unexpected %s", e.Type())
}

// errSuperseded stops work on a revision a newer request has overtaken.
type errSuperseded struct{ by int }

func (e errSuperseded) Error() string { return fmt.Sprintf("superseded by revision %d", e.by) }

func (s *Service) rendered(ctx context.Context, e event.Event, rel events.Release, r *events.Rendered) error {
	log := zerolog.Ctx(ctx)
	revision := events.Revision(e)
	if revision < 1 {
		return events.Reject(ReasonInvalidEvent, fmt.Errorf("release.rendered %s carries no revision", e.ID()))
	}
	deadline := e.Time().Add(timeout(r.Options.Timeout))
	newer := func(ctx context.Context) error {
		if r.Rollback {
			return nil // a rollback re-applies an earlier revision on purpose
		}
		return s.superseded(ctx, rel, revision)
	}
	began := time.Now()
	lease, err := s.lock(ctx, rel, revision, deadline, newer)
	if err != nil {
		return s.end(ctx, e, rel, revision, events.StageApply, err, deadline)
	}
	locked := time.Since(began)
	defer func() { _ = lease.Release(context.WithoutCancel(ctx)) }()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-lease.Keep(ctx):
			log.Warn().Int("revision", revision).Msg("lease lost: stopping")
			cancel()
		case <-ctx.Done():
		}
	}()

	cur, err := s.inventory.current(ctx, rel)
	if err != nil {
		return err
	}
	if cur != nil && cur.Revision == revision && cur.Bundle == r.Bundle && !r.Options.DryRun {
		log.Info().Int("revision", revision).Msg("already applied: publishing release.applied again")
		return s.publish(ctx, e, revision, events.TypeApplied, cur.Applied)
	}
	fetchStart := time.Now()
	bundle, err := s.bundle(ctx, r.Bundle)
	fetched := time.Since(fetchStart)
	if err != nil {
		return s.end(ctx, e, rel, revision, events.StageApply, err, deadline)
	}
	req := apply.Request{Release: rel, Revision: revision, Objects: bundle.Objects, Previous: cur.Previous(), Options: r.Options}

	if r.Options.DryRun {
		diffs, err := s.applier.Diff(ctx, req)
		if err != nil {
			return s.end(ctx, e, rel, revision, events.StageApply, err, deadline)
		}
		return s.publish(ctx, e, revision, events.TypeDiffed, events.Diffed{Bundle: r.Bundle, Objects: diffs})
	}

	start := time.Now()
	res, err := s.applier.Apply(ctx, req)
	if err != nil {
		if res != nil && len(res.Objects) > 0 {
			if oerr := s.inventory.orphans(context.WithoutCancel(ctx), rel, cur, res.Objects); oerr != nil {
				log.Error().Err(oerr).Msg("recording what the failed revision applied")
			}
		}
		return s.end(ctx, e, rel, revision, events.StageApply, err, deadline)
	}
	applied := events.Applied{Bundle: r.Bundle, Inventory: res.Inventory, Pruned: res.Pruned,
		ApplyTime: events.Duration(time.Since(start)), Options: r.Options}
	if err := s.inventory.put(ctx, rel, &Record{Release: rel.String(), Revision: revision, Bundle: r.Bundle, Cause: e.ID(),
		AppliedAt: time.Now().UTC(), Objects: res.Objects, Applied: applied}); err != nil {
		return err
	}
	log.Info().Int("revision", revision).Int("objects", len(res.Inventory)).Int("pruned", len(res.Pruned)).
		Dur("lock", locked).Dur("fetch", fetched).Dur("apply", time.Duration(applied.ApplyTime)).Dur("took", time.Since(began)).Msg("applied")
	return s.publish(ctx, e, revision, events.TypeApplied, applied)
}

func (s *Service) uninstall(ctx context.Context, e event.Event, rel events.Release, u *events.UninstallRequested) error {
	deadline := e.Time().Add(timeout(u.Timeout))
	lease, err := s.lock(ctx, rel, 0, deadline, func(context.Context) error { return nil })
	if err != nil {
		return s.end(ctx, e, rel, 0, events.StageUninstall, err, deadline)
	}
	defer func() { _ = lease.Release(context.WithoutCancel(ctx)) }()
	cur, err := s.inventory.current(ctx, rel)
	if err != nil {
		return err
	}
	var refs []events.ObjectRef
	for _, o := range cur.Previous() {
		refs = append(refs, o.ObjectRef)
	}
	deleted, kept, err := s.applier.Delete(ctx, rel, refs, u.DeleteCRDs)
	if err != nil {
		return s.end(ctx, e, rel, 0, events.StageUninstall, err, deadline)
	}
	if err := s.inventory.remove(ctx, rel); err != nil {
		return err
	}
	revision := 0
	if cur != nil {
		revision = cur.Revision
	}
	zerolog.Ctx(ctx).Info().Int("deleted", len(deleted)).Int("kept", len(kept)).Msg("uninstalled")
	return s.publish(ctx, e, revision, events.TypeUninstalled, events.Uninstalled{Deleted: deleted, Kept: kept})
}

// lock takes the release's lease, waiting while another replica or worker holds it — until the
// revision is superseded (newer says so) or its deadline passes. A holder that crashed keeps it
// no longer than its TTL.
func (s *Service) lock(ctx context.Context, rel events.Release, revision int, deadline time.Time, newer func(context.Context) error) (*events.Lease, error) {
	key := "apply." + key(rel)
	note := "uninstall"
	if revision > 0 {
		note = "revision " + strconv.Itoa(revision)
	}
	for {
		if err := newer(ctx); err != nil {
			return nil, err
		}
		lease, err := s.leases.Acquire(ctx, key, s.opts.LeaseTTL, note)
		if err == nil {
			return lease, nil
		}
		if !errors.Is(err, events.ErrLeaseHeld) {
			return nil, err
		}
		if time.Now().After(deadline) {
			return nil, &apply.Error{Reason: ReasonTimeout, Err: fmt.Errorf("the release stayed locked past the revision's timeout: %w", err)}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// superseded returns errSuperseded when a newer real (not dry-run) request of rel than revision
// is in the stream.
func (s *Service) superseded(ctx context.Context, rel events.Release, revision int) error {
	seq, latest, err := s.revisions.Latest(ctx, rel)
	if err != nil || latest <= revision {
		return err
	}
	m, err := s.stream.GetMsg(ctx, seq)
	if err != nil {
		return fmt.Errorf("latest request of %s: %w", rel, err)
	}
	e, err := s.opts.Names.Decode(m.Subject, m.Header, m.Data)
	if err == nil {
		if req, err := events.Data[events.Requested](e); err == nil && req.Options.DryRun {
			return nil // a dry run of a newer revision changes nothing: this one goes on
		}
	}
	return errSuperseded{by: latest}
}

// bundle reads a bundle from the bundles object store.
func (s *Service) bundle(ctx context.Context, digest string) (*events.Bundle, error) {
	rc, err := s.bundles.Get(ctx, digest)
	if errors.Is(err, events.ErrNotFound) {
		return nil, &apply.Error{Reason: ReasonBundleNotFound, Err: fmt.Errorf("bundle %s is not in the bundles object store", digest)}
	}
	if err != nil {
		return nil, &apply.Error{Reason: apply.ReasonClusterUnreachable, Transient: true, Err: fmt.Errorf("bundle %s: %w", digest, err)}
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return nil, &apply.Error{Reason: ReasonBundleNotFound, Transient: true, Err: fmt.Errorf("bundle %s: %w", digest, err)}
	}
	b, err := events.ReadBundle(data)
	if err != nil {
		return nil, &apply.Error{Reason: ReasonInvalidEvent, Err: fmt.Errorf("bundle %s: %w", digest, err)}
	}
	return b, nil
}

// end ends work on a revision that could not go on: superseded → release.superseded, its
// normal end; otherwise the error goes back to the subscriber, which retries or fails the
// revision (failure).
func (s *Service) end(ctx context.Context, e event.Event, rel events.Release, revision int, stage string, err error, deadline time.Time) error {
	if sup, ok := errors.AsType[errSuperseded](err); ok {
		zerolog.Ctx(ctx).Info().Int("revision", revision).Int("newer", sup.by).Msg("superseded")
		return s.publish(ctx, e, revision, events.TypeSuperseded, events.Superseded{ByRevision: sup.by, Stage: stage})
	}
	if ctx.Err() != nil {
		return err // shutting down or the lease was lost: another delivery finishes the work
	}
	return failure(stage, revision, err, time.Now().Before(deadline))
}

// failure is an apply error as the subscriber reads it: the reason, the message without the
// reason (release.failed carries it beside), each failing object; transient only while the
// revision's deadline has not passed. Other errors (NATS, the KV) stay as they are: retried.
func failure(stage string, revision int, err error, timeLeft bool) error {
	ae, ok := errors.AsType[*apply.Error](err)
	if !ok {
		return err
	}
	f := &events.Error{Stage: stage, Revision: revision, Reason: ae.Reason, Message: ae.Detail(),
		Transient: ae.Transient && timeLeft, Err: err}
	for _, o := range ae.Objects {
		f.Objects = append(f.Objects, events.ObjectStatus{ObjectRef: o.Ref, Status: events.StatusFailed, Message: o.Message})
	}
	return f
}

// publish publishes the applier's reaction to e; its id derives from e's, so a redelivered e
// gets the same event again, which the stream drops as a duplicate.
func (s *Service) publish(ctx context.Context, e event.Event, revision int, typ string, data any) error {
	out, err := events.Derive(e, source, typ, data)
	if err != nil {
		return events.Terminal(err)
	}
	if revision > 0 {
		events.WithRevision(&out, revision)
	}
	_, err = s.pub.Publish(ctx, out)
	return err
}

func timeout(d events.Duration) time.Duration {
	if d <= 0 {
		return events.DefaultTimeout
	}
	return time.Duration(d)
}
