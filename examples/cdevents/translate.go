package main

import (
	"fmt"
	"strings"

	"github.com/cdevents/sdk-go/pkg/api"
	cdevents04 "github.com/cdevents/sdk-go/pkg/api/v04"
	cdevents "github.com/cdevents/sdk-go/pkg/api/v05"
	"github.com/cloudevents/sdk-go/v2/event"
	purl "github.com/package-url/packageurl-go"

	"github.com/troupe-dev/troupe/events"
)

// Reconciliation event types: custom events (dev.cdeventsx.<tool>-<subject>.<predicate>.<version>)
// standing in for the draft dev.cdevents.reconciliation.started/finished.0.1.0-draft, which
// CDEvents v0.5.1 and its Go SDK do not have (see doc.go).
var (
	reconciliationStarted  = api.CDEventType{Custom: "troupe", Subject: "reconciliation", Predicate: "started", Version: "0.1.0"}
	reconciliationFinished = api.CDEventType{Custom: "troupe", Subject: "reconciliation", Predicate: "finished", Version: "0.1.0"}
)

// Outcomes of a finished reconciliation, the draft's words.
const (
	outcomeSuccess = "success"
	outcomeFailure = "failure"
	outcomeCancel  = "cancel"
)

// targetType is the kind of target a reconciliation converges: a troupe release.
const targetType = "troupe-release"

// maxReason bounds a finished reconciliation's reason: a failure's message can be 32 KiB.
const maxReason = 1024

// facts are what a release.ready or release.uninstalled does not say about its flow, read from
// the stream (lookup.facts): whether the flow was a rollback, what it rendered, and whether the
// release had a ready revision before it.
type facts struct {
	// Rollback: the flow re-applied an earlier revision (its release.rendered says so).
	Rollback bool
	// Chart and Bundle: what the flow's release.rendered names (Chart nil for kustomize and
	// plain manifests; both empty when the stream no longer has that event).
	Chart  *events.ChartInfo
	Bundle string
	// Live: the release had a ready revision, and no uninstall since, before this event.
	Live bool
}

// Spec versions the bridge speaks: the newest, and the one before, which consumers built on an
// older SDK (a Flux notification-controller Receiver) read.
const (
	Spec05 = "0.5"
	Spec04 = "0.4"
)

// spec makes the CDEvents of one spec version, with the SDK's package for it.
type spec struct {
	deployed, upgraded, rolledback func() (artifactEvent, error)
	removed                        func() (environmentEvent, error)
	custom                         func() (customEvent, error)
}

// environmentEvent is a service event: it names an environment; artifactEvent also an artifact.
type environmentEvent interface {
	api.CDEventV04
	SetSubjectEnvironment(*api.Reference)
}

type artifactEvent interface {
	environmentEvent
	SetSubjectArtifactId(string)
}

// customEvent is a custom event, of any type and subject content.
type customEvent interface {
	api.CDEventV04
	SetEventType(api.CDEventType)
	SetSubjectContent(any)
}

var specs = map[string]spec{
	Spec05: {
		deployed:   func() (artifactEvent, error) { return cdevents.NewServiceDeployedEvent() },
		upgraded:   func() (artifactEvent, error) { return cdevents.NewServiceUpgradedEvent() },
		rolledback: func() (artifactEvent, error) { return cdevents.NewServiceRolledbackEvent() },
		removed:    func() (environmentEvent, error) { return cdevents.NewServiceRemovedEvent() },
		custom:     func() (customEvent, error) { return cdevents.NewCustomTypeEvent() },
	},
	Spec04: {
		deployed:   func() (artifactEvent, error) { return cdevents04.NewServiceDeployedEvent() },
		upgraded:   func() (artifactEvent, error) { return cdevents04.NewServiceUpgradedEvent() },
		rolledback: func() (artifactEvent, error) { return cdevents04.NewServiceRolledbackEvent() },
		removed:    func() (environmentEvent, error) { return cdevents04.NewServiceRemovedEvent() },
		custom:     func() (customEvent, error) { return cdevents04.NewCustomTypeEvent() },
	},
}

// needsFacts reports whether translating an event of type typ reads facts from the stream.
func needsFacts(typ string) bool { return typ == events.TypeReady || typ == events.TypeUninstalled }

// mapper turns troupe events into CDEvents. It is pure: what it needs from the stream comes in
// as facts, so every mapping is table-tested without NATS.
type mapper struct {
	// spec makes the events of one CDEvents spec version.
	spec spec
	// source is the CDEvents context source (and the subjects' source): this bridge.
	source string
	// withReconciliation: also emit the reconciliation started/finished events.
	withReconciliation bool
}

// translate returns the CDEvents that e stands for, built and validated against their schemas
// (the SDK's, and ours for the custom reconciliation events); none for an event that maps to
// nothing. An error means e cannot be mapped: trying again would not help.
//
//	release.requested, release.rollback.requested, release.uninstall.requested
//	                      → reconciliation.started
//	release.ready         → service.deployed (no ready revision before, or uninstalled since),
//	                        service.rolledback (the flow was a rollback), service.upgraded (else);
//	                        then reconciliation.finished (success)
//	release.uninstalled   → service.removed (when the release had a ready revision);
//	                        then reconciliation.finished (success)
//	release.failed        → reconciliation.finished (failure)
//	release.superseded    → reconciliation.finished (cancel)
//	release.diffed        → reconciliation.finished (success, nothing changed: a dry run)
func (m mapper) translate(e event.Event, f facts) ([]api.CDEventV04, error) {
	r, err := events.ReleaseOf(e)
	if err != nil {
		return nil, err
	}
	var out []api.CDEventV04
	add := func(cd api.CDEventV04, err error) error {
		if err != nil {
			return err
		}
		out = append(out, cd)
		return nil
	}
	switch e.Type() {
	case events.TypeRequested, events.TypeRollbackRequested, events.TypeUninstallRequested:
		if m.withReconciliation {
			err = add(m.started(e, r))
		}
	case events.TypeReady:
		if err = add(m.service(e, r, f)); err == nil && m.withReconciliation {
			err = add(m.finished(e, r, outcomeSuccess, "", nil))
		}
	case events.TypeUninstalled:
		u, derr := events.Data[events.Uninstalled](e)
		if derr != nil {
			return nil, derr
		}
		if f.Live {
			err = add(m.removed(e, r))
		}
		if err == nil && m.withReconciliation {
			changed := len(u.Deleted) > 0
			err = add(m.finished(e, r, outcomeSuccess, "", &changed))
		}
	case events.TypeFailed:
		if m.withReconciliation {
			p, derr := events.Data[events.Failed](e)
			if derr != nil {
				return nil, derr
			}
			err = add(m.finished(e, r, outcomeFailure, fmt.Sprintf("%s: %s: %s", p.Stage, p.Reason, p.Message), nil))
		}
	case events.TypeSuperseded:
		if m.withReconciliation {
			p, derr := events.Data[events.Superseded](e)
			if derr != nil {
				return nil, derr
			}
			err = add(m.finished(e, r, outcomeCancel, fmt.Sprintf("superseded by %s at %s", p.By(), p.Stage), nil))
		}
	case events.TypeDiffed:
		if m.withReconciliation {
			unchanged := false
			err = add(m.finished(e, r, outcomeSuccess, "dry run", &unchanged))
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", e.Type(), e.ID(), err)
	}
	return out, nil
}

// serviceKind is the CDEvents service predicate of a ready revision: a rollback of a release
// that was running is rolledback; a rollback after an uninstall installs it again, deployed.
func serviceKind(f facts) string {
	switch {
	case f.Rollback && f.Live:
		return "rolledback"
	case f.Live:
		return "upgraded"
	}
	return "deployed"
}

// service is the service.deployed, .upgraded or .rolledback of a ready revision.
func (m mapper) service(e event.Event, r events.Release, f facts) (api.CDEventV04, error) {
	artifact, err := artifactID(r, f)
	if err != nil {
		return nil, err
	}
	newEvent := m.spec.deployed
	switch serviceKind(f) {
	case "rolledback":
		newEvent = m.spec.rolledback
	case "upgraded":
		newEvent = m.spec.upgraded
	}
	cd, err := newEvent()
	if err != nil {
		return nil, err
	}
	cd.SetSubjectArtifactId(artifact)
	cd.SetSubjectEnvironment(&api.Reference{Id: r.Namespace, Source: m.source})
	return m.finish(cd, e, r, r.String())
}

// removed is the service.removed of an uninstalled release.
func (m mapper) removed(e event.Event, r events.Release) (api.CDEventV04, error) {
	cd, err := m.spec.removed()
	if err != nil {
		return nil, err
	}
	cd.SetSubjectEnvironment(&api.Reference{Id: r.Namespace, Source: m.source})
	return m.finish(cd, e, r, r.String())
}

// reference is a draft reconciliation's desiredState; target is its target.
type reference struct {
	ID     string `json:"id"`
	Source string `json:"source,omitempty"`
}

type target struct {
	ID     string `json:"id"`
	Source string `json:"source,omitempty"`
	Type   string `json:"type"`
}

// reconciliation is the subject content of the draft reconciliation events.
type reconciliation struct {
	// DesiredState is what the flow converges to: the request that started it (its id, the
	// flow's correlation id).
	DesiredState reference `json:"desiredState"`
	// Target is the release.
	Target target `json:"target"`
	// Finished only.
	Changed *bool  `json:"changed,omitempty"`
	Outcome string `json:"outcome,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// started is the reconciliation.started of a request.
func (m mapper) started(e event.Event, r events.Release) (api.CDEventV04, error) {
	return m.reconciliationEvent(e, r, reconciliationStarted, reconciliation{})
}

// finished is the reconciliation.finished of a flow's terminal event.
func (m mapper) finished(e event.Event, r events.Release, outcome, reason string, changed *bool) (api.CDEventV04, error) {
	return m.reconciliationEvent(e, r, reconciliationFinished, reconciliation{Outcome: outcome, Reason: events.Truncate(reason, maxReason), Changed: changed})
}

func (m mapper) reconciliationEvent(e event.Event, r events.Release, typ api.CDEventType, content reconciliation) (api.CDEventV04, error) {
	cd, err := m.spec.custom()
	if err != nil {
		return nil, err
	}
	flow := flowOf(e)
	content.DesiredState = reference{ID: flow}
	content.Target = target{ID: r.String(), Source: m.source, Type: targetType}
	cd.SetEventType(typ)
	cd.SetSubjectContent(content)
	cd.SetSchemaUri(schemaURI(typ))
	// One reconciliation is one flow: its subject is the flow, by correlation id.
	return m.finish(cd, e, r, flow)
}

// troupeData is the custom data of every CDEvent the bridge sends: the troupe event it came
// from, for a consumer to find the flow with `troupe trace`.
type troupeData struct {
	Release     string `json:"release"`
	Revision    int    `json:"revision,omitempty"`
	Event       string `json:"event"`
	Type        string `json:"type"`
	Correlation string `json:"correlationId"`
}

// finish sets what every CDEvent of e shares — an id derived from e's and the CDEvent type (a
// redelivered troupe event makes the same CDEvent, which a sink can drop as a duplicate), the
// source, e's time, the subject, the flow as chain, troupe's facts as custom data — and validates
// the event against its schemas.
func (m mapper) finish(cd api.CDEventV04, e event.Event, r events.Release, subject string) (api.CDEventV04, error) {
	cd.SetId(events.DeriveID(e.ID(), "cdevents "+typeOf(cd)))
	cd.SetSource(m.source)
	cd.SetTimestamp(e.Time())
	cd.SetSubjectId(subject)
	cd.SetChainId(flowOf(e))
	if err := cd.SetCustomData(event.ApplicationJSON, troupeData{Release: r.String(), Revision: events.Revision(e),
		Event: e.ID(), Type: e.Type(), Correlation: flowOf(e)}); err != nil {
		return nil, err
	}
	if err := validate(cd); err != nil {
		return nil, err
	}
	return cd, nil
}

// flowOf is e's flow: its correlation id, or its own id for a request from outside troupe's SDK.
func flowOf(e event.Event) string {
	if c := events.CorrelationID(e); c != "" {
		return c
	}
	return e.ID()
}

// typeOf is a CDEvent's type. The SDK's GetType of a custom event returns the custom type's
// empty default, not the type it was given (SDK v0.5.1): the context has it.
func typeOf(cd api.CDEventReader) string {
	switch c := cd.(type) {
	case *api.CustomTypeEventV0_5_1:
		return c.Context.GetType().String()
	case *api.CustomTypeEventV0_4_1:
		return c.Context.GetType().String()
	}
	return cd.GetType().String()
}

// artifactID is the package URL of what a ready revision runs: its chart (pkg:generic/<chart>@<version>),
// else its rendered bundle (pkg:generic/<release>@sha256:…), else the release's name alone.
func artifactID(r events.Release, f facts) (string, error) {
	name, version := r.Name, ""
	switch {
	case f.Chart != nil:
		name, version = f.Chart.Name, f.Chart.Version
	case f.Bundle != "":
		version = f.Bundle
	}
	p := purl.NewPackageURL(purl.TypeGeneric, "", strings.ToLower(name), version, nil, "")
	s := p.ToString()
	if _, err := purl.FromString(s); err != nil {
		return "", fmt.Errorf("artifact %s: %w", s, err)
	}
	return s, nil
}
