package main

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/examples/policygate/rules"
)

// DefaultName is the gate's name unless --name says otherwise: what a release's options.gates
// and a namespace's policy (`troupe gate require policy -n NS`) name.
const DefaultName = "policy"

// Reasons of the gate's verdicts.
const (
	ReasonPassed    = "passed"
	ReasonViolation = "policy_violation"
)

// MaxFindings bounds the findings one verdict carries, so that it stays a small event (a
// finding is a few hundred bytes; NATS takes a message of 1 MB by default): the message says how
// many more there were.
const MaxFindings = 1000

// shownInMessage is how many findings the verdict's message spells out: the rest are in its
// findings.
const shownInMessage = 3

// Options configure the policy gate.
type Options struct {
	// Name is the gate's name. Default DefaultName.
	Name  string
	Rules rules.Config
	// Subscriber tunes the gate's consumer (metrics, tracing, backoff); the SDK sets its service,
	// types, names and logger.
	Subscriber events.SubscriberConfig
	Names      events.Names
	Logger     *zerolog.Logger
}

// New returns the policy gate o describes, ready to Start: a subscriber to release.rendered that
// judges every revision naming it with rules.Check and publishes release.approved or
// release.rejected on its own subjects.
func New(ctx context.Context, js jetstream.JetStream, o Options) (*events.Gate, error) {
	for _, ns := range o.Rules.ForbidLoadBalancerIn {
		if ns == rules.AllNamespaces {
			continue
		}
		if err := events.ValidateName("namespace", ns); err != nil {
			return nil, fmt.Errorf("--forbid-loadbalancer-in: %w", err)
		}
	}
	return events.NewGate(ctx, js, events.GateConfig{
		Name:       cmp.Or(o.Name, DefaultName),
		Judge:      Judge(o.Rules),
		Subscriber: o.Subscriber,
		Names:      o.Names,
		Logger:     o.Logger,
	})
}

// Judge judges a revision's bundle under cfg. It never fails: a bundle is judged on what it
// holds, and the SDK already turned a bundle it could not read into the revision's end.
func Judge(cfg rules.Config) func(ctx context.Context, req events.GateRequest) (events.Judgement, error) {
	return func(ctx context.Context, req events.GateRequest) (events.Judgement, error) {
		objects := len(req.Bundle.Objects) + len(req.Bundle.Hooks)
		j := verdict(rules.Check(req.Bundle, req.Release, cfg), objects)
		zerolog.Ctx(ctx).Info().Bool("approved", j.Approve).Int("objects", objects).Int("findings", len(j.Findings)).
			Bool("dry_run", req.DryRun).Bool("rollback", req.Rollback).Msg("judged")
		return j, nil
	}
}

// verdict is the judgement on the findings of a bundle of n objects: approved when there are
// none, else rejected with them (at most MaxFindings) and a message that counts them by rule
// and spells out the first few.
func verdict(findings []events.Finding, n int) events.Judgement {
	if len(findings) == 0 {
		return events.Judgement{Approve: true, Reason: ReasonPassed,
			Message: fmt.Sprintf("%d objects checked against %s: nothing found", n, strings.Join(rules.Rules, ", "))}
	}
	perRule := map[string]int{}
	for _, f := range findings {
		perRule[f.Rule]++
	}
	var counts []string
	for _, r := range slices.Sorted(maps.Keys(perRule)) {
		counts = append(counts, fmt.Sprintf("%s %d", r, perRule[r]))
	}
	var msg strings.Builder
	fmt.Fprintf(&msg, "%d %s (%s): ", len(findings), plural(len(findings), "finding"), strings.Join(counts, ", "))
	for i, f := range findings[:min(len(findings), shownInMessage)] {
		if i > 0 {
			msg.WriteString("; ")
		}
		fmt.Fprintf(&msg, "%s: %s", f.Object, f.Message)
	}
	if len(findings) > shownInMessage {
		fmt.Fprintf(&msg, "; and %d more", len(findings)-shownInMessage)
	}
	if len(findings) > MaxFindings {
		fmt.Fprintf(&msg, " (the first %d are listed)", MaxFindings)
		findings = findings[:MaxFindings]
	}
	return events.Judgement{Reason: ReasonViolation, Message: msg.String(), Findings: findings}
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
