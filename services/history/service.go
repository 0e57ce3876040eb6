package history

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/access"
	"github.com/troupe-dev/troupe/events/historyapi"
)

// Name is the service's name: its durable consumer and its source troupe/history.
const Name = "history"

const source = events.SourcePrefix + Name

// Reasons a rollback fails with before it starts (release.failed, stage rollback).
const (
	ReasonNoRollbackTarget = "no_rollback_target"
	ReasonBundleExpired    = "bundle_expired"
)

// Options configure the service.
type Options struct {
	// Keep is how many revisions per release the views keep (and their bundles in the object
	// store; older bundles are deleted, unless a kept revision has the same). Default 10.
	Keep int
	// Subscriber tunes the consumer; Service, Types, Produces, Concurrency, DeliverAll, Logger
	// and Metrics are set by New.
	Subscriber events.SubscriberConfig
	Names      events.Names // the system it works in: the live one (zero value) or a sandbox
	// Grace is how long past a flow's deadline the deadline watchdog (Watchdog) waits before it
	// ends the flow with release.failed deadline_exceeded. Default DefaultGrace.
	Grace   time.Duration
	Version string
	Logger  *zerolog.Logger
	Metrics *events.Metrics
}

// Service is the history service.
type Service struct {
	opts      Options
	js        jetstream.JetStream
	kv        jetstream.KeyValue
	stream    jetstream.Stream // the events stream, read to catch a view up (store.go)
	bundles   *events.Objects
	gates     *events.GatePolicy
	revisions *events.Revisions
	pub       *events.Publisher
	sub       *events.Subscriber
	watchdog  *Watchdog
	readyOnce sync.Once
	ready     <-chan struct{}
}

// New opens what the service shares through NATS (made by events.Provision).
func New(ctx context.Context, js jetstream.JetStream, o Options) (*Service, error) {
	if o.Keep <= 0 {
		o.Keep = 10
	}
	s := &Service{opts: o, js: js, pub: events.NewPublisher(js, o.Names)}
	var err error
	if s.kv, err = js.KeyValue(ctx, o.Names.KV(events.KVHistory)); err != nil {
		return nil, fmt.Errorf("history: kv %s: %w", o.Names.KV(events.KVHistory), err)
	}
	if s.stream, err = js.Stream(ctx, o.Names.Stream()); err != nil {
		return nil, fmt.Errorf("history: stream %s: %w", o.Names.Stream(), err)
	}
	if s.gates, err = events.OpenGatePolicy(ctx, js, o.Names); err != nil {
		return nil, err
	}
	if s.bundles, err = events.OpenObjects(ctx, js, o.Names.Objects(events.BucketBundles)); err != nil {
		return nil, err
	}
	if s.revisions, err = events.NewRevisions(ctx, js, o.Names); err != nil {
		return nil, err
	}
	sc := o.Subscriber
	sc.Service, sc.Version, sc.Names = Name, o.Version, o.Names
	for _, spec := range events.Catalog() {
		sc.Types = append(sc.Types, spec.Type)
	}
	sc.Produces = access.Publishes(access.History) // what its NATS identity may publish
	// One at a time per replica; the order of a release's events in its view is the stream's
	// whatever the order of deliveries (store.go), so replicas need no order among them.
	sc.Concurrency, sc.DeliverAll, sc.Logger, sc.Metrics = 1, true, o.Logger, o.Metrics
	if s.sub, err = events.NewSubscriber(js, sc, s.handle); err != nil {
		return nil, err
	}
	if s.watchdog, err = NewWatchdog(ctx, js, WatchdogOptions{Names: o.Names, Grace: o.Grace, Subscriber: o.Subscriber,
		Version: o.Version, Logger: o.Logger, Metrics: o.Metrics}); err != nil {
		return nil, err
	}
	return s, nil
}

// Start handles events, and runs the deadline watchdog, until ctx ends.
func (s *Service) Start(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- s.watchdog.Start(ctx) }()
	err := s.sub.Start(ctx)
	cancel()
	return errors.Join(err, <-errc)
}

// Ready is closed once the service receives events and its watchdog watches.
func (s *Service) Ready() <-chan struct{} {
	s.readyOnce.Do(func() { s.ready = both(s.sub.Ready(), s.watchdog.Ready()) })
	return s.ready
}

// both returns a channel closed once a and b are.
func both(a, b <-chan struct{}) <-chan struct{} {
	c := make(chan struct{})
	go func() {
		<-a
		<-b
		close(c)
	}()
	return c
}

// Receiving reports whether the service receives events now (serve.Receiver): false while its
// consumer is created again after it disappeared.
func (s *Service) Receiving() bool { return s.sub.Receiving() }

func (s *Service) handle(ctx context.Context, e event.Event) error {
	rel, err := events.ReleaseOf(e)
	if err != nil {
		return events.Terminal(err)
	}
	d, _ := events.DeliveryFrom(ctx)
	// The event is a trigger: the view is caught up to it from the stream, in stream order, and
	// stored by compare-and-set — whichever replica, whatever came first.
	v, bad, err := s.advance(ctx, rel, e, d.Sequence)
	if err != nil {
		return err
	}
	if bad != nil {
		return bad // its payload cannot be folded (skipped, as Rebuild skips it): dead-letter it
	}
	// What history does about the event is decided from the view, folded now or before (a
	// redelivery, or another replica caught up past it): its events have derived ids, so doing
	// it twice publishes once.
	return s.react(ctx, v, e)
}

// fold folds e into v, numbering a release.requested as every service does.
func (s *Service) fold(ctx context.Context, v *historyapi.View, e event.Event, seq uint64) error {
	revision := events.Revision(e)
	if e.Type() == events.TypeRequested && seq > v.Sequence {
		rel, _ := events.ReleaseOf(e)
		n, err := s.revisions.Of(ctx, rel, seq)
		if err != nil {
			return err
		}
		revision = n
	}
	if err := Fold(v, e, seq, revision); err != nil {
		return events.Terminal(err)
	}
	return nil
}

// react starts rollbacks: the one a release.rollback.requested asks for (re-publishing the
// target revision's bundle as its release.rendered), or refuses it with release.failed; and,
// when a revision whose request said rollbackOnFailure fails (but not a rollback), asks for
// one to the last ready revision — or, when nothing is deployed (a first install), for an
// uninstall.
func (s *Service) react(ctx context.Context, v *historyapi.View, e event.Event) error {
	entry := v.Entry(e.ID())
	if entry == nil {
		return nil // pruned with its revision
	}
	switch {
	case e.Type() == events.TypeRollbackRequested && entry.Action == historyapi.ActionRollbackRefused:
		return refusal(0, ReasonNoRollbackTarget, entry.Note)
	case e.Type() == events.TypeRollbackRequested && entry.Action == historyapi.ActionRollback:
		target := v.Get(entry.Revision)
		if target == nil {
			return nil
		}
		ok, err := s.bundles.Has(ctx, target.Bundle)
		if err != nil {
			return err
		}
		if !ok {
			return refusal(target.Revision, ReasonBundleExpired, fmt.Sprintf(
				"%s revision %d: its bundle %s is no longer in the bundles object store", v.Release, target.Revision, target.Bundle))
		}
		var opts events.Options
		if target.Request != nil {
			opts = target.Request.Options
		}
		opts.DryRun, opts.RollbackOnFailure = false, false // a rollback is real, and never rolls back again
		if rb, err := events.Data[events.RollbackRequested](e); err == nil && rb.Options.Timeout > 0 {
			opts.Timeout = rb.Options.Timeout
		}
		// A rollback passes the gates a revision would: the ones the target's request named, and
		// the namespace's policy's now (the applier lets a gate whose policy trusts earlier
		// approvals through on one of this bundle).
		rel, _ := events.ReleaseOf(e)
		policy, err := s.gates.For(ctx, rel.Namespace)
		if err != nil {
			return err
		}
		out, err := events.Derive(e, source, events.TypeRendered, events.Rendered{Bundle: target.Bundle, Size: target.Size, Values: target.Values,
			Objects: target.Objects, Chart: target.Chart, Rollback: true, Options: opts, Gates: events.RequiredGates(opts.Gates, policy)})
		if err != nil {
			return events.Terminal(err)
		}
		events.WithRevision(&out, target.Revision)
		_, err = s.pub.Publish(ctx, out)
		return err
	case e.Type() == events.TypeFailed && entry.Action == "":
		r := v.Get(entry.Revision)
		if r == nil || r.State != historyapi.StateFailed || r.Request == nil || !r.Request.Options.RollbackOnFailure {
			return nil
		}
		if r.Stage == events.StageGate {
			return nil // held at its gates: nothing of it was applied, nothing to undo
		}
		target, _, why := RollbackTarget(v, 0)
		if why != "" && firstInstall(v, r) && r.Stage != events.StageRender && r.Stage != events.StageRequest {
			// A first install (nothing ready before, or uninstalled since) that reached the
			// cluster: undone by uninstalling, as helm install --atomic does.
			out, err := events.Derive(e, source, events.TypeUninstallRequested, events.UninstallRequested{
				Automatic: true, Timeout: r.Request.Options.Timeout, Revision: r.Revision,
				Reason: events.Truncate(fmt.Sprintf("revision %d failed at %s (%s): %s; nothing was ready before", r.Revision, r.Stage, r.Reason, r.Message), events.MaxMessageLength)})
			if err != nil {
				return events.Terminal(err)
			}
			events.StartFlow(&out)
			_, err = s.pub.Publish(ctx, out)
			return err
		}
		if why != "" || target == r.Revision {
			return nil // nothing was ready before: nothing to roll back to
		}
		out, err := events.Derive(e, source, events.TypeRollbackRequested, events.RollbackRequested{
			TargetRevision: target, Automatic: true,
			Reason: events.Truncate(fmt.Sprintf("revision %d failed at %s (%s): %s", r.Revision, r.Stage, r.Reason, r.Message), events.MaxMessageLength)})
		if err != nil {
			return events.Terminal(err)
		}
		events.StartFlow(&out) // the rollback's applied, ready… must not take the failed flow's ids
		_, err = s.pub.Publish(ctx, out)
		return err
	}
	return nil
}

// firstInstall says whether r, failed, was a first install to undo by uninstalling: a real
// request (not a dry run), the newest of the release, with no revision ready since the release
// was last uninstalled (or ever) — so not an upgrade whose automatic rollback failed before.
func firstInstall(v *historyapi.View, r *historyapi.Revision) bool {
	if r.Request == nil || r.Request.Options.DryRun || v.Current != 0 {
		return false
	}
	if latest := v.Latest(); latest != nil && latest.Revision != r.Revision {
		return false
	}
	for i := len(v.Timeline) - 1; i >= 0; i-- {
		switch v.Timeline[i].Type {
		case events.TypeUninstalled:
			return true
		case events.TypeReady:
			return false
		}
	}
	return true
}

// refusal fails a rollback that cannot start (stage rollback): the subscriber dead-letters the
// request and publishes release.failed.
func refusal(revision int, reason, message string) error {
	return &events.Error{Stage: events.StageRollback, Reason: reason, Message: message, Revision: revision}
}

// deleteBundles deletes the bundles and values of revisions the view no longer keeps, unless a kept
// revision has the same one (best effort: an object left over costs space, nothing else).
func (s *Service) deleteBundles(ctx context.Context, v *historyapi.View, dropped []*historyapi.Revision) {
	for _, d := range dropped {
		for _, digest := range []string{d.Bundle, d.Values} {
			if digest == "" {
				continue
			}
			shared := false
			for _, r := range v.Revisions {
				shared = shared || r.Bundle == digest || r.Values == digest
			}
			if !shared {
				_ = s.bundles.Delete(ctx, digest)
			}
		}
	}
}

// ErrUnknownRelease is returned for a release history has no view of.
var ErrUnknownRelease = errors.New("unknown release")

// View returns rel's view.
func (s *Service) View(ctx context.Context, rel events.Release) (*historyapi.View, error) {
	entry, err := s.kv.Get(ctx, key(rel))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("%w %s", ErrUnknownRelease, rel)
	}
	if err != nil {
		return nil, err
	}
	var v historyapi.View
	if err := json.Unmarshal(entry.Value(), &v); err != nil {
		return nil, fmt.Errorf("history of %s: %w", rel, err)
	}
	return &v, nil
}

// Views returns every release's view.
func (s *Service) Views(ctx context.Context) ([]*historyapi.View, error) {
	rels, err := s.releases(ctx, "")
	if err != nil {
		return nil, err
	}
	var out []*historyapi.View
	for _, rel := range rels {
		v, err := s.View(ctx, rel)
		if err != nil {
			continue
		}
		out = append(out, v)
	}
	return out, nil
}

// releases lists the releases with a view (of one namespace, unless ""), in NS/NAME order.
func (s *Service) releases(ctx context.Context, namespace string) ([]events.Release, error) {
	filter := ">"
	if namespace != "" {
		filter = namespace + ".>"
	}
	keys, err := s.kv.ListKeysFiltered(ctx, filter)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []events.Release
	for k := range keys.Keys() {
		if rel, err := releaseOfKey(k); err == nil {
			out = append(out, rel)
		}
	}
	slices.SortFunc(out, func(a, b events.Release) int { return strings.Compare(a.String(), b.String()) })
	return out, nil
}

// Bundle reads a bundle from the bundles object store.
func (s *Service) Bundle(ctx context.Context, digest string) (*events.Bundle, error) {
	rc, err := s.bundles.Get(ctx, digest)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return nil, err
	}
	return events.ReadBundle(data)
}

func key(rel events.Release) string { return rel.Namespace + "." + rel.Name }

func releaseOfKey(k string) (events.Release, error) {
	for i := 0; i < len(k); i++ {
		if k[i] == '.' {
			return events.Release{Namespace: k[:i], Name: k[i+1:]}, nil
		}
	}
	return events.Release{}, fmt.Errorf("key %q names no release", k)
}
