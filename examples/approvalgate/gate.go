package main

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/events"
)

// DefaultName is the gate's name unless --name says otherwise: what `troupe approve` and
// `troupe reject` ask by default, and what releases (--gate approval) and namespaces' policies
// (`troupe gate require approval -n NS`) name.
const DefaultName = "approval"

// ReasonDryRun is the reason of the gate's approval of a dry run.
const ReasonDryRun = "dry_run"

// DryRunMessage is the message of the gate's approval of a dry run.
const DryRunMessage = "dry run: a person would have to approve this revision"

// Options configure the approval gate.
type Options struct {
	// Name is the gate's name. Default DefaultName.
	Name string
	// Approvers, when set, are the only names a decision may be by (GateDecision.By); empty:
	// anyone who may ask the gate (the approver identity).
	Approvers []string
	// Subscriber tunes the gate's consumer (metrics, tracing, backoff); the SDK sets its service,
	// types, names and logger.
	Subscriber events.SubscriberConfig
	Names      events.Names
	Logger     *zerolog.Logger
}

// New returns the approval gate o describes, ready to Start: a subscriber to release.rendered
// that leaves every revision naming it waiting for a person's decision, and takes those
// decisions on its decision subject (events.Names.GateDecisionSubject).
func New(ctx context.Context, js jetstream.JetStream, o Options) (*events.Gate, error) {
	log := o.Logger
	if log == nil {
		nop := zerolog.Nop()
		log = &nop
	}
	name := cmp.Or(o.Name, DefaultName)
	l := log.With().Str("gate", name).Logger()
	return events.NewGate(ctx, js, events.GateConfig{
		Name:       name,
		Judge:      judge,
		Decisions:  decisions(o.Approvers, &l),
		Subscriber: o.Subscriber,
		Names:      o.Names,
		Logger:     o.Logger,
	})
}

// judge leaves a revision to a person: it publishes nothing (Wait), and the revision waits for
// `troupe approve` or `troupe reject`, or its deadline. A dry run, which applies nothing and
// waits for no one, is approved at once, saying a person would have to.
func judge(ctx context.Context, req events.GateRequest) (events.Judgement, error) {
	if req.DryRun {
		return events.Judgement{Approve: true, Reason: ReasonDryRun, Message: DryRunMessage}, nil
	}
	zerolog.Ctx(ctx).Info().Str("release", req.Release.String()).Int("revision", req.Revision).
		Str("bundle", req.Rendered.Bundle).Bool("rollback", req.Rollback).Msg("waiting for approval")
	return events.Judgement{Wait: true}, nil
}

// decisions returns the check of a person's decision: with approvers, it must be by one of
// them. Every decision is logged, taken or refused.
func decisions(approvers []string, log *zerolog.Logger) func(ctx context.Context, req events.GateRequest, d events.GateDecision) error {
	return func(ctx context.Context, req events.GateRequest, d events.GateDecision) error {
		l := log.With().Str("release", req.Release.String()).Int("revision", req.Revision).
			Str("verdict", map[bool]string{true: events.VerdictApproved, false: events.VerdictRejected}[d.Approve]).
			Str("by", d.By).Logger()
		if err := allowed(approvers, d.By); err != nil {
			l.Warn().Err(err).Msg("decision refused")
			return err
		}
		l.Info().Str("reason", d.Reason).Msg("decided")
		return nil
	}
}

// allowed says whether a decision by by may be taken: always without approvers, else only when
// by is one of them.
func allowed(approvers []string, by string) error {
	switch {
	case len(approvers) == 0:
		return nil
	case by == "":
		return fmt.Errorf("the decision names no approver (by); this gate takes decisions by %s only", strings.Join(approvers, ", "))
	case !slices.Contains(approvers, by):
		return fmt.Errorf("%q is not an approver of this gate (%s)", by, strings.Join(approvers, ", "))
	}
	return nil
}
