package applier

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"k8s.io/client-go/rest"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/access"
	"github.com/troupe-dev/troupe/services/applier/apply"
)

// Name is the service's name: its durable consumer and its source troupe/applier.
const Name = "applier"

const source = events.SourcePrefix + Name

// Reasons the service itself fails a revision with (the apply package has the cluster's).
const (
	ReasonBundleNotFound = "bundle_not_found"
	// ReasonBundleUntrusted: the bundle was not signed by a writer the applier trusts, or its
	// content is not what its digest says.
	ReasonBundleUntrusted = "bundle_untrusted"
	ReasonTimeout         = "timeout"
	ReasonInvalidEvent    = "invalid_event"
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
	// Checkpoint, when set, is called as a revision passes each named point of its handling
	// (Point*). For fault tests only: cmd/applier wires it to TROUPE_TEST_KILL_AT and
	// TROUPE_TEST_STALL_AT, so a test can SIGKILL the process at an exact point.
	Checkpoint func(point string)
	// BundleWriters, when set, is who may have written a bundle it applies: a bundle not signed
	// by one of them (events.Signer) fails the revision with ReasonBundleUntrusted, whatever
	// NATS let others write to the store. cmd/applier and troupe dev set it to the renderer's
	// and history's identities when the applier runs with troupe's credentials.
	BundleWriters *events.Attestor
}

// Points of a revision's handling that Options.Checkpoint is called at.
const (
	// PointIntent: the revision's intent is recorded; the cluster is not changed yet.
	PointIntent = "intent"
	// PointApplied: the cluster holds the revision's objects; nothing recorded it yet.
	PointApplied = "applied"
	// PointRecorded: the inventory holds the revision; release.applied is not published yet.
	PointRecorded = "recorded"
)

// Service is the applier.
type Service struct {
	opts      Options
	applier   *apply.Applier
	bundles   *events.Objects
	revisions *events.Revisions
	flows     *events.Flows
	leases    *events.Leases
	inventory *inventory
	gates     *events.GatePolicy
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
	if s.bundles, err = events.OpenObjects(ctx, js, o.Names.Objects(events.BucketBundles)); err != nil {
		return nil, err
	}
	if o.BundleWriters != nil {
		s.bundles.TrustOnly(o.BundleWriters)
	}
	if s.revisions, err = events.NewRevisions(ctx, js, o.Names); err != nil {
		return nil, err
	}
	if s.flows, err = events.NewFlows(ctx, js, o.Names); err != nil {
		return nil, err
	}
	if s.leases, err = events.NewLeases(ctx, js, o.Names, o.Holder); err != nil {
		return nil, err
	}
	if s.inventory, err = openInventory(ctx, js, o.Names); err != nil {
		return nil, err
	}
	if s.gates, err = events.OpenGatePolicy(ctx, js, o.Names); err != nil {
		return nil, err
	}
	if s.stream, err = js.Stream(ctx, o.Names.Stream()); err != nil {
		return nil, fmt.Errorf("applier: stream %s: %w", o.Names.Stream(), err)
	}
	sc := o.Subscriber
	sc.Service, sc.Version, sc.Names = Name, o.Version, o.Names
	// release.failed too: a newer revision that failed before it got here (a chart that does not
	// render) still supersedes one waiting for its gates.
	sc.Types = []string{events.TypeRendered, events.TypeSettled, events.TypeUninstallRequested, events.TypeApproved, events.TypeRejected,
		events.TypeFailed}
	sc.Produces = access.Publishes(access.Applier) // what its NATS identity may publish
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
		d, ok := events.DeliveryFrom(ctx)
		if !ok {
			return events.Terminalf("applier: no stream position for %s", e.ID())
		}
		// A revision waiting for its gates that this one supersedes ends now, not at its deadline.
		if err := s.rewaitOthers(ctx, rel, events.CorrelationID(e)); err != nil {
			return err
		}
		return s.rendered(ctx, e, d.Sequence, rel, r)
	case events.TypeApproved, events.TypeRejected:
		return s.verdict(ctx, e, rel)
	case events.TypeFailed:
		// Its own flow ended (the deadline watchdog's failure of a waiting revision): it waits
		// no more.
		if err := s.inventory.doneWaiting(ctx, rel, events.CorrelationID(e)); err != nil {
			return err
		}
		return s.rewaitOthers(ctx, rel, events.CorrelationID(e))
	case events.TypeSettled:
		st, err := events.Data[events.Settled](e)
		if err != nil {
			return events.Reject(ReasonInvalidEvent, err)
		}
		return s.settled(ctx, e, rel, st)
	case events.TypeUninstallRequested:
		u, err := events.Data[events.UninstallRequested](e)
		if err != nil {
			return events.Reject(ReasonInvalidEvent, err)
		}
		if err := s.rewaitOthers(ctx, rel, ""); err != nil {
			return err
		}
		return s.uninstall(ctx, e, rel, u)
	}
	return events.Terminalf("applier: unexpected %s", e.Type())
}

// errSuperseded stops work on a revision a newer request (by), an uninstall (uninstall, its
// id) or a rollback (rollback, its id) has overtaken.
type errSuperseded struct {
	by        int
	uninstall string
	rollback  string
}

func (e errSuperseded) payload(stage string) events.Superseded {
	return events.Superseded{ByRevision: e.by, ByUninstall: e.uninstall, ByRollback: e.rollback, Stage: stage}
}

func (e errSuperseded) Error() string {
	p := e.payload("")
	return "superseded by " + p.By()
}

// rendered applies a revision (or diffs it, for a dry run), in steps: take the release's lease
// (dropping the revision if a newer request overtook it), read the inventory, drop a revision an
// uninstall overtook, wait for its gates (gates.go), answer a redelivery of what is applied
// already, fetch the bundle, then diff — or record the intent, apply, record the inventory and
// publish release.applied. seq is e's stream sequence.
func (s *Service) rendered(ctx context.Context, e event.Event, seq uint64, rel events.Release, r *events.Rendered) (retErr error) {
	log := zerolog.Ctx(ctx)
	revision := events.Revision(e)
	if revision < 1 {
		return events.Reject(ReasonInvalidEvent, fmt.Errorf("release.rendered %s carries no revision", e.ID()))
	}
	deadline := flowDeadline(e, r.Options.Timeout)
	newer := func(ctx context.Context) error {
		if r.Rollback { // an earlier revision again, on purpose: only a newer request overtakes it
			return s.rollbackSuperseded(ctx, rel, events.CorrelationID(e))
		}
		return s.superseded(ctx, rel, revision, r.Options.DryRun)
	}
	began := time.Now()
	lease, err := s.lock(ctx, rel, revision, deadline, newer)
	if err != nil {
		return s.end(ctx, e, rel, revision, events.StageApply, err, deadline)
	}
	locked := time.Since(began)
	defer func() { _ = lease.Release(context.WithoutCancel(ctx)) }()
	if late, err := s.late(ctx, e, revision); late || err != nil {
		if late {
			return s.inventory.doneWaiting(ctx, rel, events.CorrelationID(e))
		}
		return err
	}
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
	if err := s.uninstalledSince(ctx, rel, cur, e, r); err != nil {
		return s.end(ctx, e, rel, revision, events.StageApply, err, deadline)
	}
	if cur != nil && cur.Revision == revision && cur.Bundle == r.Bundle && !r.Options.DryRun {
		// Before the gates: what is applied stays applied, whatever a gate says since.
		log.Info().Int("revision", revision).Msg("already applied: publishing release.applied unless the stream has it")
		return s.publishOnce(ctx, e, rel, revision, events.TypeApplied, cur.Applied)
	}
	gates, err := s.checkGates(ctx, e, rel, seq, r)
	if err != nil {
		return err
	}
	if len(gates.required) > 0 {
		corr := events.CorrelationID(e)
		if len(gates.pending) > 0 && len(gates.rejected()) == 0 {
			// Recorded before the verdicts are read again: a verdict this read misses is handled
			// after it, and finds the wait.
			if err := s.inventory.awaitGates(ctx, rel, wait{Correlation: corr, Sequence: seq, Revision: revision}); err != nil {
				return err
			}
			if gates, err = s.checkGates(ctx, e, rel, seq, r); err != nil {
				return err
			}
		}
		if len(gates.pending) > 0 && len(gates.rejected()) == 0 {
			log.Info().Int("revision", revision).Strs("waiting_for", gates.pending).Msg("waiting for gates")
			return nil
		}
		// It waits no more once what follows is done; until then (a transient error, a crash)
		// the wait stays, and the verdict's redelivery finds it.
		defer func() {
			if retErr == nil {
				if err := s.inventory.doneWaiting(context.WithoutCancel(ctx), rel, corr); err != nil {
					log.Warn().Err(err).Msg("gate waits not cleared: the next event of the release does")
				}
			}
		}()
		if rejected := gates.rejected(); len(rejected) > 0 && !r.Options.DryRun {
			f := gateFailure(revision, r.Bundle, rejected)
			log.Info().Int("revision", revision).Str("gate", rejected[0].Gate).Msg("rejected by a gate: not applied")
			return s.publish(ctx, e, revision, events.TypeFailed, f, "gate")
		}
		log.Info().Int("revision", revision).Strs("gates", gates.required).Msg("gates approved")
	}
	fetchStart := time.Now()
	var bundle *events.Bundle
	err = events.Stage(ctx, "apply fetch bundle", func(ctx context.Context) (err error) {
		bundle, err = s.bundle(ctx, r.Bundle)
		return err
	})
	fetched := time.Since(fetchStart)
	if err != nil {
		return s.end(ctx, e, rel, revision, events.StageApply, err, deadline)
	}
	if r.Adopted != nil {
		return s.adopt(ctx, e, rel, r, cur, bundle, deadline)
	}
	req := apply.Request{Release: rel, Revision: revision, Objects: bundle.Objects, Previous: cur.Previous(), Pending: cur.Pending(), Options: r.Options}
	req.HookPhase = prePhase(cur, r)
	req.Hooks, req.HookDeadline = hooksOf(bundle, req.HookPhase), deadline
	req.HooksRan = func(ctx context.Context, runs []events.HookRun) error {
		return s.publish(ctx, e, revision, events.TypeHooked, events.Hooked{Phase: req.HookPhase, Bundle: r.Bundle, Hooks: runs}, req.HookPhase)
	}

	if r.Options.DryRun {
		diffs, err := s.applier.Diff(ctx, req)
		if err != nil {
			return s.end(ctx, e, rel, revision, events.StageApply, err, deadline)
		}
		return s.publish(ctx, e, revision, events.TypeDiffed, events.Diffed{Bundle: r.Bundle, Objects: diffs, Gates: gates.list()})
	}

	// Intent before action: what the revision is about to apply is in the inventory before the
	// cluster changes, so a kill at any point leaves nothing the next revision or an uninstall
	// does not find.
	req.Intent = func(ctx context.Context, objects []events.ObjectRef) error {
		if err := s.inventory.intend(ctx, rel, revision, objects); err != nil {
			return err
		}
		s.checkpoint(PointIntent)
		return nil
	}
	start := time.Now()
	res, err := s.applier.Apply(ctx, req)
	s.checkpoint(PointApplied)
	if err != nil {
		if res != nil && len(res.Objects) > 0 {
			if oerr := s.inventory.orphans(context.WithoutCancel(ctx), rel, res.Objects); oerr != nil {
				log.Error().Err(oerr).Msg("recording what the failed revision applied")
			}
		}
		return s.end(ctx, e, rel, revision, events.StageApply, err, deadline)
	}
	applied := events.Applied{Bundle: r.Bundle, Inventory: res.Inventory, Pruned: res.Pruned,
		ApplyTime: events.Duration(time.Since(start)), Options: r.Options}
	if post := events.PostPhase(req.HookPhase); len(hooksOf(bundle, post)) > 0 {
		applied.PostHooks = post // run once the health watcher finds every object ready (settled)
	}
	if err := s.inventory.put(ctx, rel, &Record{Release: rel.String(), Revision: revision, Bundle: r.Bundle, Cause: e.ID(),
		AppliedAt: time.Now().UTC(), Objects: res.Objects, Applied: applied}); err != nil {
		return err
	}
	s.checkpoint(PointRecorded)
	log.Info().Int("revision", revision).Int("objects", len(res.Inventory)).Int("pruned", len(res.Pruned)).
		Dur("lock", locked).Dur("fetch", fetched).Dur("apply", time.Duration(applied.ApplyTime)).Dur("took", time.Since(began)).Msg("applied")
	return s.publish(ctx, e, revision, events.TypeApplied, applied)
}

// adopt takes over a Helm release's objects for r's revision, changing none (apply.Adopt), and
// records them as the release's inventory: the next revision applies them as troupe's, handing
// Helm's field ownership over first, and prunes what it no longer has. A release troupe already
// manages is not adopted into.
func (s *Service) adopt(ctx context.Context, e event.Event, rel events.Release, r *events.Rendered, cur *Record, bundle *events.Bundle, deadline time.Time) error {
	revision := events.Revision(e)
	if cur != nil && cur.Uninstalled == nil && len(cur.Objects) > 0 {
		return s.end(ctx, e, rel, revision, events.StageApply, &apply.Error{Reason: apply.ReasonOwnershipConflict,
			Err: fmt.Errorf("troupe already manages %s (revision %d): a Helm release is adopted only into a release troupe does not have", rel, cur.Revision)}, deadline)
	}
	var remove []string
	if r.Adopted.RemoveHelmSecrets {
		remove = r.Adopted.Secrets
	}
	start := time.Now()
	res, err := s.applier.Adopt(ctx, apply.AdoptRequest{Release: rel, Revision: revision, Objects: bundle.Objects,
		HelmRelease: r.Adopted.Name, FieldManagers: r.Adopted.FieldManagers, RemoveSecrets: remove})
	if err != nil {
		return s.end(ctx, e, rel, revision, events.StageApply, err, deadline)
	}
	applied := events.Applied{Bundle: r.Bundle, Inventory: res.Inventory, ApplyTime: events.Duration(time.Since(start)), Options: r.Options, Adopted: true}
	if err := s.inventory.put(ctx, rel, &Record{Release: rel.String(), Revision: revision, Bundle: r.Bundle, Cause: e.ID(),
		AppliedAt: time.Now().UTC(), Objects: res.Objects, Applied: applied}); err != nil {
		return err
	}
	zerolog.Ctx(ctx).Info().Int("revision", revision).Str("helm", r.Adopted.Name).Int("helmRevision", r.Adopted.Revision).
		Int("objects", len(res.Objects)).Bool("helmSecretsRemoved", len(remove) > 0).Msg("adopted")
	return s.publish(ctx, e, revision, events.TypeApplied, applied)
}

// settled runs a revision's post-phase hooks once the health watcher found every object ready:
// under the release's lease, unless a newer revision overtook it or its flow ended, then says
// so with release.hooked (the health watcher's cue to end the flow with release.ready) — or, a
// hook failing, release.failed at stage hook.
func (s *Service) settled(ctx context.Context, e event.Event, rel events.Release, st *events.Settled) error {
	revision := events.Revision(e)
	if revision < 1 {
		return events.Reject(ReasonInvalidEvent, fmt.Errorf("release.settled %s carries no revision", e.ID()))
	}
	deadline := flowDeadline(e, 0)
	newer := func(ctx context.Context) error {
		if st.Phase == events.HookPostRollback { // an earlier revision again, on purpose
			return s.rollbackSuperseded(ctx, rel, events.CorrelationID(e))
		}
		return s.superseded(ctx, rel, revision, false)
	}
	lease, err := s.lock(ctx, rel, revision, deadline, newer)
	if err != nil {
		return s.end(ctx, e, rel, revision, events.StageHook, err, deadline)
	}
	defer func() { _ = lease.Release(context.WithoutCancel(ctx)) }()
	if late, err := s.late(ctx, e, revision); late || err != nil {
		return err
	}
	bundle, err := s.bundle(ctx, st.Bundle)
	if err != nil {
		return s.end(ctx, e, rel, revision, events.StageHook, err, deadline)
	}
	hooks := hooksOf(bundle, st.Phase)
	if len(hooks) == 0 {
		return events.Reject(ReasonInvalidEvent, fmt.Errorf("release.settled %s: bundle %s has no %s hooks", e.ID(), st.Bundle, st.Phase))
	}
	runs, err := s.applier.RunHooks(ctx, apply.Request{Release: rel, Revision: revision, Objects: bundle.Objects,
		Hooks: hooks, HookPhase: st.Phase, HookDeadline: deadline})
	if err != nil {
		return s.end(ctx, e, rel, revision, events.StageHook, err, deadline)
	}
	zerolog.Ctx(ctx).Info().Int("revision", revision).Str("phase", st.Phase).Int("hooks", len(runs)).Msg("hooks ran")
	// Keyed by phase: the pre phase's release.hooked has the flow and type of this one.
	return s.publish(ctx, e, revision, events.TypeHooked, events.Hooked{Phase: st.Phase, Bundle: st.Bundle, Hooks: runs}, st.Phase)
}

// prePhase is the hook phase a revision runs before its objects, as Helm chooses it: pre-rollback
// for a rollback, pre-install when the release has nothing applied (never, or uninstalled since),
// else pre-upgrade.
func prePhase(cur *Record, r *events.Rendered) string {
	switch {
	case r.Rollback:
		return events.HookPreRollback
	case cur == nil || cur.Revision == 0 || cur.Uninstalled != nil:
		return events.HookPreInstall
	}
	return events.HookPreUpgrade
}

// hooksOf is the bundle's hooks for phase, in the bundle's order (Helm's); none for no bundle.
func hooksOf(b *events.Bundle, phase string) []events.BundleHook {
	if b == nil {
		return nil
	}
	var out []events.BundleHook
	for _, h := range b.Hooks {
		if slices.Contains(h.Events, phase) {
			out = append(out, h)
		}
	}
	return out
}

// uninstall deletes every object the release may have in the cluster (its inventory and any
// pending intent), then leaves a tombstone in the inventory: the uninstall request's stream
// sequence, so that a revision requested before it is not applied after it.
func (s *Service) uninstall(ctx context.Context, e event.Event, rel events.Release, u *events.UninstallRequested) error {
	d, ok := events.DeliveryFrom(ctx)
	if !ok {
		return events.Terminalf("applier: no stream position for %s", e.ID())
	}
	deadline := flowDeadline(e, u.Timeout)
	newer := func(context.Context) error { return nil }
	if u.Automatic && u.Revision > 0 {
		// Undoing a failed first install: a request made since wins, as it does over an
		// automatic rollback.
		newer = func(ctx context.Context) error {
			seq, by, err := s.revisions.Superseding(ctx, rel, u.Revision, false)
			if err != nil || seq == 0 {
				return err
			}
			return errSuperseded{by: by}
		}
	}
	lease, err := s.lock(ctx, rel, 0, deadline, newer)
	if err != nil {
		return s.end(ctx, e, rel, 0, events.StageUninstall, err, deadline)
	}
	defer func() { _ = lease.Release(context.WithoutCancel(ctx)) }()
	if late, err := s.late(ctx, e, 0); late || err != nil {
		return err
	}
	cur, err := s.inventory.current(ctx, rel)
	if err != nil {
		return err
	}
	revision := 0
	if cur != nil {
		revision = cur.Revision
	}
	// The hooks of the revision in the cluster: pre-delete before its objects go, post-delete
	// after. A redelivery of this uninstall finds its tombstone: the objects are gone, the
	// post-delete hooks run (again).
	digest, again := "", false
	switch {
	case cur != nil && cur.Uninstalled == nil:
		digest = cur.Bundle
	case cur != nil && cur.Uninstalled.Request == e.ID():
		digest, again = cur.Uninstalled.Bundle, true
	}
	var bundle *events.Bundle
	if digest != "" {
		if bundle, err = s.bundle(ctx, digest); err != nil {
			return s.end(ctx, e, rel, revision, events.StageUninstall, err, deadline)
		}
	}
	runPhase := func(phase string) error {
		hooks := hooksOf(bundle, phase)
		if len(hooks) == 0 {
			return nil
		}
		runs, err := s.applier.RunHooks(ctx, apply.Request{Release: rel, Revision: revision, Objects: bundle.Objects,
			Hooks: hooks, HookPhase: phase, HookDeadline: deadline})
		if err != nil {
			return err
		}
		return s.publish(ctx, e, revision, events.TypeHooked, events.Hooked{Phase: phase, Bundle: digest, Hooks: runs}, phase)
	}
	if !again {
		if err := runPhase(events.HookPreDelete); err != nil {
			return s.end(ctx, e, rel, revision, events.StageHook, err, deadline)
		}
	}
	var deleted, kept []events.ObjectRef
	err = events.Stage(ctx, "apply delete", func(ctx context.Context) (err error) {
		deleted, kept, err = s.applier.Delete(ctx, rel, cur.All(), u.DeleteCRDs, apply.AdoptedOf(cur.Previous()))
		return err
	})
	if err != nil {
		return s.end(ctx, e, rel, 0, events.StageUninstall, err, deadline)
	}
	if err := s.inventory.uninstalled(ctx, rel, Tombstone{Sequence: d.Sequence, Request: e.ID(), At: time.Now().UTC(), Bundle: digest}); err != nil {
		return err
	}
	if err := runPhase(events.HookPostDelete); err != nil {
		return s.end(ctx, e, rel, revision, events.StageHook, err, deadline)
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
	waited := false
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
		if !waited {
			zerolog.Ctx(ctx).Info().Int("revision", revision).Err(err).Msg("waiting for the release's lease")
			waited = true
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

// superseded returns errSuperseded when a newer request of rel than revision, of the same kind
// (events.Revisions.Superseding: a dry run never supersedes a real request), is in the stream.
// A real request is also overtaken by a rollback requested after it.
func (s *Service) superseded(ctx context.Context, rel events.Release, revision int, dryRun bool) error {
	seq, newer, err := s.revisions.Superseding(ctx, rel, revision, dryRun)
	switch {
	case err != nil:
		return err
	case seq > 0:
		return errSuperseded{by: newer}
	case dryRun:
		return nil
	}
	rb, err := s.revisions.RolledBackSince(ctx, rel, revision)
	if err != nil || rb == "" {
		return err
	}
	return errSuperseded{rollback: rb}
}

// rollbackSuperseded returns errSuperseded when a request stored after the rollback whose
// release.rollback.requested has id overtook it: a newer rollback, or a real release.requested
// (a rollback requested before revision 10, and handled after it, must not undo it).
func (s *Service) rollbackSuperseded(ctx context.Context, rel events.Release, id string) error {
	by, rb, err := s.revisions.SupersedingRollback(ctx, rel, id)
	if err != nil || (by == 0 && rb == "") {
		return err
	}
	return errSuperseded{by: by, rollback: rb}
}

// uninstalledSince returns errSuperseded when an uninstall of the release came after r's request
// (a release.requested, or a rollback's release.rollback.requested: the event whose id is the
// flow's correlation id) in the stream: the one the release's record holds as its tombstone, or
// one requested and not handled yet — after a crash this flow's redelivery and the uninstall come
// together, and whichever takes the lease first, newest wins. A dry run goes on (it changes
// nothing).
func (s *Service) uninstalledSince(ctx context.Context, rel events.Release, cur *Record, e event.Event, r *events.Rendered) error {
	if r.Options.DryRun {
		return nil
	}
	var since uint64
	var by string
	if cur != nil && cur.Uninstalled != nil {
		since, by = cur.Uninstalled.Sequence, cur.Uninstalled.Request
	}
	usubj, err := s.opts.Names.Subject(rel, events.TypeUninstallRequested)
	if err != nil {
		return err
	}
	switch last, err := s.stream.GetLastMsgForSubject(ctx, usubj); {
	case errors.Is(err, jetstream.ErrMsgNotFound):
	case err != nil:
		return fmt.Errorf("the uninstall requests of %s: %w", rel, err)
	case last.Sequence > since:
		// Its id is the event's; an unreadable one is no uninstall (it is dead-lettered and
		// uninstalls nothing), and must not drop a newer revision. (It can hide an uninstall
		// before it from this check: then the uninstall, handled later, still deletes.)
		if u, err := s.opts.Names.Decode(last.Subject, last.Header, last.Data); err == nil {
			since, by = last.Sequence, u.ID()
		}
	}
	if since == 0 {
		return nil
	}
	typ := events.TypeRequested
	if r.Rollback {
		typ = events.TypeRollbackRequested
	}
	subject, err := s.opts.Names.Subject(rel, typ)
	if err != nil {
		return err
	}
	corr := events.CorrelationID(e)
	// Requests after the uninstall are few: the tombstone goes with the next recorded revision.
	for from := since + 1; ; {
		m, err := s.stream.GetMsg(ctx, from, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return errSuperseded{uninstall: by}
		}
		if err != nil {
			return fmt.Errorf("requests of %s after its uninstall: %w", rel, err)
		}
		if m.Header.Get(jetstream.MsgIDHeader) == corr {
			return nil // requested after the uninstall: installs the release again
		}
		from = m.Sequence + 1
	}
}

// bundle reads a bundle from the bundles object store.
func (s *Service) bundle(ctx context.Context, digest string) (*events.Bundle, error) {
	rc, err := s.bundles.Get(ctx, digest)
	if errors.Is(err, events.ErrNotFound) {
		return nil, &apply.Error{Reason: ReasonBundleNotFound, Err: fmt.Errorf("bundle %s is not in the bundles object store", digest)}
	}
	if errors.Is(err, events.ErrUntrustedWriter) {
		return nil, &apply.Error{Reason: ReasonBundleUntrusted, Err: fmt.Errorf("bundle %s: %w", digest, err)}
	}
	if err != nil {
		return nil, &apply.Error{Reason: apply.ReasonClusterUnreachable, Transient: true, Err: fmt.Errorf("bundle %s: %w", digest, err)}
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if errors.Is(err, events.ErrDigestMismatch) { // not what was written under its digest
		return nil, &apply.Error{Reason: ReasonBundleUntrusted, Err: fmt.Errorf("bundle %s: %w", digest, err)}
	}
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
		zerolog.Ctx(ctx).Info().Int("revision", revision).Int("newer", sup.by).Str("uninstall", sup.uninstall).Str("rollback", sup.rollback).Msg("superseded")
		return s.publish(ctx, e, revision, events.TypeSuperseded, sup.payload(stage))
	}
	if ctx.Err() != nil {
		return err // shutting down or the lease was lost: another delivery finishes the work
	}
	// Transient only while another attempt can come before the deadline: past it the next
	// delivery would be dropped (late), and the user would learn less than this error says.
	d, _ := events.DeliveryFrom(ctx)
	return failure(stage, revision, err, retryFits(time.Now(), d.RetryDelay, deadline))
}

// redeliverySlack is the least room retryFits leaves for a redelivery to come late.
const redeliverySlack = 500 * time.Millisecond

// retryFits reports whether a delivery failing now may be tried again before the deadline: the
// next one comes after retryDelay, plus however long the server and this process take — on a
// busy machine, hundreds of milliseconds — and one that comes past the deadline is dropped
// unanswered. So it leaves as much room again (at least redeliverySlack) for it to come late.
func retryFits(now time.Time, retryDelay time.Duration, deadline time.Time) bool {
	return now.Add(retryDelay + max(retryDelay, redeliverySlack)).Before(deadline)
}

// failure is an apply error as the subscriber reads it: the reason, the message without the
// reason (release.failed carries it beside), each failing object; transient only while the
// revision's deadline has not passed. Other errors (NATS, the KV) stay as they are: retried.
func failure(stage string, revision int, err error, timeLeft bool) error {
	ae, ok := errors.AsType[*apply.Error](err)
	if !ok {
		return err
	}
	if ae.Stage != "" {
		stage = ae.Stage
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
func (s *Service) publish(ctx context.Context, e event.Event, revision int, typ string, data any, key ...string) error {
	out, err := events.Derive(e, source, typ, data, key...)
	if err != nil {
		return events.Terminal(err)
	}
	if revision > 0 {
		events.WithRevision(&out, revision)
	}
	_, err = s.pub.Publish(ctx, out)
	if errors.Is(err, events.ErrFlowEnded) {
		zerolog.Ctx(ctx).Info().Err(err).Msg("not published")
		return nil
	}
	return err
}

// late reports whether e comes too late to touch the cluster: past its flow's deadline, or once
// the flow ended. The handler then drops e (the deadline watchdog ends the flow, or ended it), so
// a late applier never applies a revision the user was told had failed.
func (s *Service) late(ctx context.Context, e event.Event, revision int) (bool, error) {
	err := s.flows.Fence(ctx, e, time.Now())
	if errors.Is(err, events.ErrFlowEnded) || errors.Is(err, events.ErrDeadlinePassed) {
		zerolog.Ctx(ctx).Warn().Int("revision", revision).Err(err).Msg("dropped: too late to apply")
		return true, nil
	}
	return false, err
}

// flowDeadline is when e's flow must have ended: its deadline, else (an event from outside the
// SDK) its own time plus the timeout its options name.
func flowDeadline(e event.Event, d events.Duration) time.Time {
	if t := events.FlowDeadline(e); !t.IsZero() {
		return t
	}
	return e.Time().Add(timeout(d))
}

// checkpoint tells Options.Checkpoint that a revision passed point.
func (s *Service) checkpoint(point string) {
	if s.opts.Checkpoint != nil {
		s.opts.Checkpoint(point)
	}
}

// publishOnce publishes the applier's reaction to e unless the stream holds it already (the last
// event of its type for the release has its id): a redelivery, however late — the stream's
// duplicate window does not reach back that far.
func (s *Service) publishOnce(ctx context.Context, e event.Event, rel events.Release, revision int, typ string, data any) error {
	out, err := events.Derive(e, source, typ, data)
	if err != nil {
		return events.Terminal(err)
	}
	subject, err := s.opts.Names.Subject(rel, typ)
	if err != nil {
		return events.Terminal(err)
	}
	m, err := s.stream.GetLastMsgForSubject(ctx, subject)
	switch {
	case err == nil && m.Header.Get(jetstream.MsgIDHeader) == out.ID():
		return nil
	case err != nil && !errors.Is(err, jetstream.ErrMsgNotFound):
		return fmt.Errorf("last %s of %s: %w", typ, rel, err)
	}
	return s.publish(ctx, e, revision, typ, data)
}

func timeout(d events.Duration) time.Duration {
	if d <= 0 {
		return events.DefaultTimeout
	}
	return time.Duration(d)
}
