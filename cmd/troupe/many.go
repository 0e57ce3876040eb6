package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel/trace"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/flow"
	"github.com/troupe-dev/troupe/events/historyapi"
	"github.com/troupe-dev/troupe/events/tracing"
)

// maxNamespaces bounds --namespaces: one command, one connection, this many requests.
const maxNamespaces = 10000

// inFlight is how many requests of --namespaces are published at once.
const inFlight = 64

// namespacesFlag binds --namespaces: the same request for the release NAME in each namespace.
func namespacesFlag(cmd *cobra.Command, list *[]string) {
	cmd.Flags().StringSliceVar(list, "namespaces", nil, "the same request for NAME in each of these namespaces (comma-separated or repeated; instead of -n): one connection, one upload, and with --wait one watch of them all")
}

// releasesArg is the releases a command acts on: NAME in each namespace of --namespaces (list),
// in the order given, each once. An empty list is nil: the command acts on NAME in -n's.
func releasesArg(cmd *cobra.Command, name string, list []string) ([]events.Release, error) {
	if len(list) == 0 {
		return nil, nil
	}
	if cmd.Flags().Changed("namespace") {
		return nil, usagef("-n and --namespaces: one or the other")
	}
	if strings.Contains(name, "/") {
		return nil, usagef("NAME %s: with --namespaces, give the release's name alone", name)
	}
	if len(list) > maxNamespaces {
		return nil, usagef("--namespaces: %d namespaces, at most %d at once", len(list), maxNamespaces)
	}
	var rels []events.Release
	for _, ns := range list {
		r := events.Release{Namespace: ns, Name: name}
		if err := r.Validate(); err != nil {
			return nil, usagef("--namespaces: %w", err)
		}
		if !slices.Contains(rels, r) {
			rels = append(rels, r)
		}
	}
	return rels, nil
}

// sendMany is send for many releases at once: each gets its own request (data says what), all
// published over one connection once before (nil: nothing) has put what they refer to in the
// stores, inFlight at a time; with --wait, every flow is followed through one watch, and each
// release's outcome printed as it ends. It fails (exit 1) when any release did; a request that
// could not be published is said, with those that were.
func (c *cli) sendMany(ctx context.Context, rels []events.Release, typ string, data func(events.Release) (any, error), before func(context.Context, jetstream.JetStream) error, how waiting) error {
	evs := make([]event.Event, len(rels))
	for i, rel := range rels {
		d, err := data(rel)
		if err != nil {
			return err
		}
		if evs[i], err = events.NewEvent(events.SourcePrefix+"cli", typ, rel, d); err != nil {
			return usageError{err}
		}
	}
	nc, js, err := c.connect("troupe-cli")
	if err != nil {
		return err
	}
	defer nc.Close()
	tp, err := tracing.New(ctx, c.otlp, "cli")
	if err != nil {
		return usageError{err}
	}
	if tp.TracerProvider() != nil {
		defer c.flush(ctx, tp)
	}
	if before != nil {
		if err := before(ctx, js); err != nil {
			return err
		}
	}
	var revs *events.Revisions
	if how.numbered {
		if err := events.Await(ctx, electionPatience, func() (err error) {
			revs, err = events.NewRevisions(ctx, js, c.names)
			return err
		}); err != nil {
			return err
		}
	}
	pub := events.NewPublisher(js, c.names)
	seqs, revisions := make([]uint64, len(rels)), make([]int, len(rels))
	errs := each(len(rels), inFlight, func(i int) error {
		// Each request is the root of its own trace, as a single one is (traced), ended once
		// published: the flows are followed together below.
		ctx, span := events.StartSpan(ctx, tp.TracerProvider(), "cli request "+typ, evs[i], trace.WithSpanKind(trace.SpanKindProducer))
		var ack *jetstream.PubAck
		err := events.Await(ctx, electionPatience, func() (err error) {
			ack, err = pub.Publish(ctx, evs[i])
			return err
		})
		if err == nil && revs != nil {
			err = events.Await(ctx, electionPatience, func() (err error) {
				revisions[i], err = revs.Peek(ctx, rels[i], ack.Sequence)
				return err
			})
		}
		events.EndSpan(span, err)
		if err == nil {
			seqs[i] = ack.Sequence
		}
		return err
	})
	if err := errors.Join(errs...); err != nil {
		var sent []string
		for i, rel := range rels {
			if errs[i] == nil {
				sent = append(sent, rel.Namespace)
			}
		}
		if len(sent) > 0 {
			return fmt.Errorf("requested in %d of %d namespaces (%s), not in the others: %w", len(sent), len(rels), strings.Join(sent, ","), err)
		}
		return err
	}
	text := how.output == "table"
	if text {
		for i, rel := range rels {
			if how.numbered {
				fmt.Fprintf(c.stdout, "%s: revision %d requested (event %s)\n", rel, revisions[i], shortID(evs[i].ID()))
			} else {
				fmt.Fprintf(c.stdout, "%s: %s published (event %s)\n", rel, typ, shortID(evs[i].ID()))
			}
		}
	}
	if !how.wait {
		if text {
			return nil
		}
		out := make([]flow.Outcome, len(rels))
		for i, rel := range rels {
			out[i] = flow.Outcome{Release: rel.String(), Revision: revisions[i], State: historyapi.StateRequested}
		}
		return how.output.print(c.stdout, out, nil)
	}
	return c.followMany(ctx, js, rels, evs, seqs, revisions, how)
}

// followMany follows the flows evs started (published at stream sequences seqs) through one
// watch, and prints each outcome as it comes (table), or all of them at the end.
func (c *cli) followMany(ctx context.Context, js jetstream.JetStream, rels []events.Release, evs []event.Event, seqs []uint64, revisions []int, how waiting) error {
	var ws *flow.Watchers
	if err := events.Await(ctx, electionPatience, func() (err error) {
		ws, err = flow.WatchAll(ctx, js, c.names, rels, slices.Min(seqs))
		return err
	}); err != nil {
		return err
	}
	defer ws.Stop()
	start := time.Now()
	outs := make([]flow.Outcome, len(rels))
	var mu sync.Mutex // c.stdout
	failed := 0
	errs := each(len(rels), len(rels), func(i int) error {
		until := events.FlowDeadline(evs[i]).Add(watchdogGrace + 20*time.Second)
		if how.rollbackOnFailure {
			until = until.Add(how.timeout)
		}
		wctx, cancel := context.WithDeadline(ctx, until)
		defer cancel()
		defer ws.Of(rels[i]).Stop() // its queue keeps nothing once its flow ended
		res, err := flow.Follow(wctx, ws.Of(rels[i]), rels[i], evs[i].ID(), flow.FollowOptions{RollbackOnFailure: how.rollbackOnFailure, QuietAfter: time.Hour, Start: start}, nil)
		if err != nil {
			return fmt.Errorf("%s: %w", rels[i], err)
		}
		if res.Revision == 0 {
			res.Revision = revisions[i]
		}
		if res.Reason == flow.ReasonWaitTimeout && ctx.Err() == nil {
			res.Message = fmt.Sprintf("no terminal event past the deadline, not even the deadline watchdog's: is the history service running? troupe status %s", rels[i])
		}
		outs[i] = res
		mu.Lock()
		defer mu.Unlock()
		if !res.Succeeded() {
			failed++
		}
		if how.output == "table" {
			if res.Succeeded() {
				fmt.Fprintf(c.stdout, "%s: revision %d %s after %s\n", rels[i], res.Revision, res.State, res.Duration)
			} else {
				fmt.Fprintln(c.stdout, res.Summary())
			}
		}
		return nil
	})
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if how.output != "table" {
		if err := how.output.print(c.stdout, outs, nil); err != nil {
			return err
		}
	}
	if failed > 0 {
		return exitError{1, fmt.Errorf("%d of %d releases did not succeed", failed, len(rels))}
	}
	return nil
}

// each runs f(0) … f(n-1), at most par at once, and returns each one's error.
func each(n, par int, f func(i int) error) []error {
	errs := make([]error, n)
	sem := make(chan struct{}, max(1, par))
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = f(i)
		}()
	}
	wg.Wait()
	return errs
}
