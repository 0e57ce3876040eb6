// Package renderer is troupe's renderer service: on release.requested it renders the release's
// manifests (package render), stores the canonical bundle in the bundles object store by digest,
// and publishes release.rendered — or release.failed with stage render and nothing else happens.
// A request that a newer one of the same release and kind has overtaken is dropped with
// release.superseded: real requests by newer real ones, dry runs by newer dry runs — a dry run
// never supersedes a real request, and a real request never a dry run (it still gets its diff).
package renderer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/access"
	"github.com/troupe-dev/troupe/services/renderer/render"
)

// Name is the service's name: its durable consumer and its source troupe/renderer.
const Name = "renderer"

// Options configure the service.
type Options struct {
	Render      render.Options
	Concurrency int // renders at once per replica; default 4
	// Subscriber tunes the consumer (deliveries, backoff, tracing); Service, Types, Produces,
	// Concurrency, FailStage, Logger and Metrics are set by New.
	Subscriber events.SubscriberConfig
	Names      events.Names // the system it works in: the live one (zero value) or a sandbox
	Version    string
	Logger     *zerolog.Logger
	Metrics    *events.Metrics
	// Signer, when set, signs every bundle it stores: an applier that trusts only the
	// renderer's and history's writing (applier.Options.BundleWriters) then applies it.
	Signer *events.Signer
}

// Service is the renderer.
type Service struct {
	js        jetstream.JetStream
	renderer  *render.Renderer
	bundles   *events.Objects
	gates     *events.GatePolicy
	revisions *events.Revisions
	flows     *events.Flows
	pub       *events.Publisher
	sub       *events.Subscriber
}

// New opens the object stores and the revision counters (made by events.Provision) and returns
// the service, ready to Start.
func New(ctx context.Context, js jetstream.JetStream, o Options) (*Service, error) {
	s := &Service{js: js, pub: events.NewPublisher(js, o.Names)}
	var err error
	if s.gates, err = events.OpenGatePolicy(ctx, js, o.Names); err != nil {
		return nil, err
	}
	if s.bundles, err = events.OpenObjects(ctx, js, o.Names.Objects(events.BucketBundles)); err != nil {
		return nil, err
	}
	if o.Signer != nil {
		s.bundles.SignWith(o.Signer)
	}
	sources, err := events.OpenObjects(ctx, js, o.Names.Objects(events.BucketSources))
	if err != nil {
		return nil, err
	}
	if o.Render.Sources == nil {
		o.Render.Sources = sources.Get
	}
	if o.Render.Records == nil {
		o.Render.Records = s.bundles.Get
	}
	if s.renderer, err = render.New(o.Render); err != nil {
		return nil, err
	}
	if s.revisions, err = events.NewRevisions(ctx, js, o.Names); err != nil {
		return nil, err
	}
	if s.flows, err = events.NewFlows(ctx, js, o.Names); err != nil {
		return nil, err
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 4
	}
	sc := o.Subscriber
	sc.Service, sc.Names, sc.Version = Name, o.Names, o.Version
	sc.Types = []string{events.TypeRequested}
	sc.Produces = access.Publishes(access.Renderer) // what its NATS identity may publish
	sc.Concurrency, sc.FailStage, sc.Logger, sc.Metrics = o.Concurrency, events.StageRender, o.Logger, o.Metrics
	s.sub, err = events.NewSubscriber(js, sc, s.handle)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Start handles requests until ctx ends (see events.Subscriber.Start).
func (s *Service) Start(ctx context.Context) error { return s.sub.Start(ctx) }

// Ready is closed once the service receives requests.
func (s *Service) Ready() <-chan struct{} { return s.sub.Ready() }

// Receiving reports whether the service receives events now (serve.Receiver): false while its
// consumer is created again after it disappeared.
func (s *Service) Receiving() bool { return s.sub.Receiving() }

const source = events.SourcePrefix + Name

func (s *Service) handle(ctx context.Context, e event.Event) (err error) {
	log := zerolog.Ctx(ctx)
	req, err := events.Data[events.Requested](e)
	if err != nil {
		return events.Reject("invalid_request", err)
	}
	rel, err := events.ReleaseOf(e)
	if err != nil {
		return events.Reject("invalid_request", err)
	}
	d, ok := events.DeliveryFrom(ctx)
	if !ok {
		return events.Terminalf("renderer: no stream position for %s", e.ID())
	}
	revision, err := s.revisions.Of(ctx, rel, d.Sequence)
	if err != nil {
		return err // transient: the KV or stream; retried
	}
	events.TraceRevision(ctx, revision)
	// From here on, whatever fails the request fails this revision: the subscriber's
	// release.failed names it (the request does not carry it).
	defer func() { err = withRevision(err, revision) }()
	// Only a newer request of the same kind drops this one: a dry run never supersedes a real
	// request (CI previewing right after a release must not stop it), nor a real one a dry run.
	newerSeq, newerRev, err := s.revisions.Superseding(ctx, rel, revision, req.Options.DryRun)
	if err != nil {
		return err
	}
	if newerSeq > 0 {
		log.Info().Int("revision", revision).Int("newer", newerRev).Msg("superseded before render")
		return s.publish(ctx, e, revision, events.TypeSuperseded, events.Superseded{ByRevision: newerRev, Stage: events.StageRender})
	}
	if err := s.flows.Fence(ctx, e, time.Now()); err != nil {
		// Too late, or ended already: the deadline watchdog ends (or ended) the revision; a
		// bundle rendered now would only be dropped by the applier.
		log.Info().Int("revision", revision).Err(err).Msg("dropped")
		return dropped(err)
	}
	if deadline := events.FlowDeadline(e); !deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = events.StopAt(ctx, deadline) // not a deadline the bundle's store and publish wait out
		defer cancel()
	}

	start := time.Now()
	var out *render.Output
	err = events.Stage(ctx, "render", func(ctx context.Context) (err error) {
		out, err = s.renderer.Render(ctx, render.Input{Release: rel, Revision: revision, Request: *req})
		return err
	})
	if err != nil {
		return err // an events.Error: the subscriber retries or fails it
	}
	renderTime := time.Since(start)
	digest, size, err := s.bundles.PutBytes(ctx, out.Bundle)
	if err != nil {
		return fmt.Errorf("store bundle of %s revision %d: %w", rel, revision, err)
	}
	var values string
	if out.Values != nil {
		if values, _, err = s.bundles.PutBytes(ctx, out.Values); err != nil {
			return fmt.Errorf("store values of %s revision %d: %w", rel, revision, err)
		}
	}
	adopted, err := s.storeAdopted(ctx, out.Adopted, req.Source.HelmRelease)
	if err != nil {
		return fmt.Errorf("store the Helm revisions of %s: %w", rel, err)
	}
	// The gates asked to judge the bundle: the request's and the namespace's policy's. (The
	// applier reads the policy again before it applies: a gate required since is waited for.)
	policy, err := s.gates.For(ctx, rel.Namespace)
	if err != nil {
		return err
	}
	gates := events.RequiredGates(req.Options.Gates, policy)
	log.Info().Int("revision", revision).Str("bundle", digest).Int("objects", len(out.Objects)).Strs("gates", gates).Dur("took", renderTime).Msg("rendered")
	return s.publish(ctx, e, revision, events.TypeRendered, events.Rendered{
		Bundle: digest, Size: size, Values: values, Objects: out.Objects, RenderTime: events.Duration(renderTime),
		Chart: out.Chart, Notes: events.Truncate(out.Notes, events.MaxNotesLength), Options: req.Options, Adopted: adopted,
		Gates: gates,
	})
}

// storeAdopted stores each revision of an adopted Helm release (its manifest as a bundle, its
// values) in the bundles object store, for the history to import; nil when a is.
func (s *Service) storeAdopted(ctx context.Context, a *render.Adopted, src *events.HelmReleaseSource) (*events.Adoption, error) {
	if a == nil {
		return nil, nil
	}
	out := &events.Adoption{Name: a.Name, Revision: a.Revision, Secrets: a.Secrets, RemoveHelmSecrets: src.RemoveHelmSecrets,
		FieldManagers: src.HelmFieldManagers()}
	for _, r := range a.Revisions {
		h := r.HelmRevision
		var err error
		if h.Bundle, _, err = s.bundles.PutBytes(ctx, r.Bundle); err != nil {
			return nil, err
		}
		if r.Values != nil {
			if h.Values, _, err = s.bundles.PutBytes(ctx, r.Values); err != nil {
				return nil, err
			}
		}
		out.Revisions = append(out.Revisions, h)
	}
	return out, nil
}

// withRevision names the revision an error ends (the request does not carry it): an
// events.Error's on a copy (the render cache may hand the same error to another request), any
// other error (NATS, the object store) as a transient events.Error.
func withRevision(err error, revision int) error {
	if err == nil {
		return nil
	}
	e, ok := errors.AsType[*events.Error](err)
	if !ok {
		return &events.Error{Revision: revision, Transient: true, Err: err}
	}
	c := *e
	c.Revision = revision
	return &c
}

// publish publishes the renderer's reaction to the request e, for revision.
func (s *Service) publish(ctx context.Context, e event.Event, revision int, typ string, data any) error {
	out, err := events.Derive(e, source, typ, data)
	if err != nil {
		return events.Terminal(err)
	}
	events.WithRevision(&out, revision)
	_, err = s.pub.Publish(ctx, out)
	return dropped(err)
}

// dropped is nil for the errors that end a stage's work on a flow without a word of its own:
// the flow already ended, or its deadline passed (the deadline watchdog ends it). Others are
// returned as they are.
func dropped(err error) error {
	if errors.Is(err, events.ErrFlowEnded) || errors.Is(err, events.ErrDeadlinePassed) {
		return nil
	}
	return err
}
