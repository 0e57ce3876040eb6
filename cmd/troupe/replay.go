package main

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/troupe-dev/troupe/events"
)

type replayOptions struct {
	release      string
	since, until string
	fromSeq      uint64
	toSeq        uint64
	types        []string
	print        bool
	to           string
	output       string
}

func (c *cli) replayCmd() *cobra.Command {
	o := replayOptions{}
	cmd := &cobra.Command{
		Use:   "replay [--release NS/NAME] [--since T | --from-seq S] [--until T | --to-seq S] [--type T] (--print | --to PREFIX)",
		Short: "Re-deliver a range of the events stream: print it, or republish it under a sandbox prefix",
		Long: `Read a range of the events stream and either print it (--print) or republish every event,
unchanged, under a sandbox subject prefix (--to PREFIX: troupe.release.… becomes
PREFIX.troupe.release.…), never onto the live subjects. 'troupe dev --subjects-prefix PREFIX'
runs the services against such a sandbox, to reproduce what happened.

T is a time (RFC 3339) or a duration ago (10m, 2h).`,
		Example: `  troupe replay --release demo/hello --since 1h --print
  troupe replay --release demo/hello --type release.requested --to sandbox`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return c.replay(cmd.Context(), o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.release, "release", "", "only this release's events (NS/NAME)")
	f.StringVar(&o.since, "since", "", "from this time, or this long ago")
	f.StringVar(&o.until, "until", "", "up to this time, or this long ago")
	f.Uint64Var(&o.fromSeq, "from-seq", 0, "from this stream sequence")
	f.Uint64Var(&o.toSeq, "to-seq", 0, "up to this stream sequence")
	f.StringSliceVar(&o.types, "type", nil, "only events of these types (repeatable)")
	f.BoolVar(&o.print, "print", false, "print the events")
	f.StringVar(&o.to, "to", "", "republish under this subject prefix (a sandbox)")
	f.StringVarP(&o.output, "output", "o", "text", "with --print: text or json")
	return cmd
}

// parseWhen reads a time: RFC 3339, or a duration ago.
func parseWhen(flag, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return t, usagef("--%s %q: want a time (2026-01-02T15:04:05Z) or a duration ago (10m)", flag, s)
	}
	return t, nil
}

func (c *cli) replay(ctx context.Context, o replayOptions) error {
	if o.print == (o.to != "") {
		return usagef("say what to do with the events: --print or --to PREFIX")
	}
	var to events.Names // the sandbox replayed into
	if o.to != "" {
		var err error
		if to, err = events.NewNames(o.to); err != nil {
			return usageError{fmt.Errorf("--to: %w", err)}
		}
	}
	if o.since != "" && o.fromSeq > 0 || o.until != "" && o.toSeq > 0 {
		return usagef("--since and --from-seq (or --until and --to-seq) do not go together")
	}
	since, err := parseWhen("since", o.since)
	if err != nil {
		return err
	}
	until, err := parseWhen("until", o.until)
	if err != nil {
		return err
	}
	_, filters, err := c.tailFilters(tailOptions{release: o.release, types: o.types})
	if err != nil {
		return err
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: filters, DeliverPolicy: jetstream.DeliverAllPolicy}
	switch {
	case o.fromSeq > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, o.fromSeq
	case !since.IsZero():
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	nc, js, err := c.connect("troupe-replay")
	if err != nil {
		return err
	}
	defer nc.Close()
	cons, err := js.OrderedConsumer(ctx, c.names.Stream(), cfg)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	var objects *objectCopier // the sources and bundles the replayed events reference, copied first
	if o.to != "" {
		objects, err = newObjectCopier(ctx, js, c.names, to)
		if errors.Is(err, errNoSandboxStore) {
			return fmt.Errorf("replay to %s: %w: start 'troupe dev --subjects-prefix %s --server %s' first (it creates the sandbox's streams and stores), then replay",
				o.to, err, o.to, nc.ConnectedUrlRedacted())
		}
		if err != nil {
			return fmt.Errorf("replay to %s: %w", o.to, err)
		}
	}
	n, dup := 0, 0
	var pending []jetstream.PubAckFuture // published to the sandbox, ack not yet read
	settle := func() error {
		late := time.NewTimer(30 * time.Second)
		defer late.Stop()
		for _, f := range pending {
			select {
			case ack := <-f.Ok():
				if ack.Duplicate {
					dup++
				}
			case err := <-f.Err():
				if errors.Is(err, jetstream.ErrNoStreamResponse) {
					return fmt.Errorf("replay to %s: no stream stores %s yet: start 'troupe dev --subjects-prefix %s --server %s' first (it creates the sandbox's streams), then replay",
						f.Msg().Subject, to.ReleaseSubjects(), o.to, nc.ConnectedUrlRedacted())
				}
				return fmt.Errorf("replay to %s: %w", f.Msg().Subject, err)
			case <-late.C:
				return fmt.Errorf("replay to %s: no ack from the sandbox's stream in 30s", f.Msg().Subject)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		pending = pending[:0]
		return nil
	}
	if info.NumPending > 0 {
		it, err := cons.Messages()
		if err != nil {
			return err
		}
		defer it.Stop()
		for {
			msg, err := it.Next(jetstream.NextMaxWait(5 * time.Second))
			if errors.Is(err, nats.ErrTimeout) {
				break
			}
			if err != nil {
				return fmt.Errorf("replay: %w", err)
			}
			md, err := msg.Metadata()
			if err != nil {
				return err
			}
			if o.toSeq > 0 && md.Sequence.Stream > o.toSeq || !until.IsZero() && md.Timestamp.After(until) {
				break
			}
			if o.print {
				c.printEvent(msg, o.output)
			} else {
				// The charts and bundles it references first, so that the sandbox's services find
				// them whenever they get the event.
				missing, err := objects.copyReferenced(ctx, msg.Data())
				if err != nil {
					return fmt.Errorf("replay to %s: %w", o.to, err)
				}
				for _, d := range missing {
					fmt.Fprintf(c.stderr, "replay: %s (referenced at sequence %d) is in no object store of the live system: the sandbox will not find it either\n", d, md.Sequence.Stream)
				}
				// Through JetStream, acked: an event no sandbox stream stores is an error, not lost
				// in silence. The event keeps its id (Nats-Msg-Id), so replaying twice stores it once.
				subject := to.Root() + strings.TrimPrefix(msg.Subject(), c.names.Root())
				f, err := js.PublishMsgAsync(&nats.Msg{Subject: subject, Header: msg.Headers(), Data: msg.Data()})
				if err != nil {
					return fmt.Errorf("replay to %s: %w", o.to, err)
				}
				if pending = append(pending, f); len(pending) == 256 {
					if err := settle(); err != nil {
						return err
					}
				}
			}
			n++
			if md.NumPending == 0 {
				break
			}
		}
	}
	if err := settle(); err != nil {
		return err
	}
	if o.to != "" {
		fmt.Fprintf(c.stdout, "replayed %d events under %s", n, to.ReleaseSubjects())
		if dup > 0 {
			fmt.Fprintf(c.stdout, " (%d already there: not stored again)", dup)
		}
		if objects.copied > 0 {
			fmt.Fprintf(c.stdout, ", %d charts and bundles copied into its object stores", objects.copied)
		}
		fmt.Fprintln(c.stdout)
	} else if n == 0 {
		fmt.Fprintln(c.stderr, "no events in that range")
	}
	return nil
}

// objectCopier copies the sources and bundles replayed events reference from the live system's
// object stores into the sandbox's own, each digest once.
type objectCopier struct {
	from, to []*events.Objects // sources, bundles: in the same order
	done     map[string]bool
	copied   int
}

// errNoSandboxStore is returned for a sandbox whose object stores no `troupe dev` made yet.
var errNoSandboxStore = errors.New("no object store")

// referencedRE matches a digest anywhere in an event's data: every field that references content
// (a source's object, a bundle) holds one.
var referencedRE = regexp.MustCompile(`sha256:[0-9a-f]{64}`)

func newObjectCopier(ctx context.Context, js jetstream.JetStream, live, sandbox events.Names) (*objectCopier, error) {
	c := &objectCopier{done: map[string]bool{}}
	for _, base := range []string{events.BucketSources, events.BucketBundles} {
		from, err := events.OpenObjects(ctx, js, live.Objects(base))
		if err != nil {
			return nil, err
		}
		to, err := events.OpenObjects(ctx, js, sandbox.Objects(base))
		if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("%w %s", errNoSandboxStore, sandbox.Objects(base))
		}
		if err != nil {
			return nil, err
		}
		c.from, c.to = append(c.from, from), append(c.to, to)
	}
	return c, nil
}

// copyReferenced copies every digest data references, from whichever live store holds it, into
// the sandbox's store of the same kind (unless there already), and returns the digests no live
// store holds.
func (c *objectCopier) copyReferenced(ctx context.Context, data []byte) (missing []string, err error) {
	for _, d := range referencedRE.FindAllString(string(data), -1) {
		if c.done[d] {
			continue
		}
		found := false
		for i := range c.from {
			ok, err := c.copy(ctx, c.from[i], c.to[i], d)
			if err != nil {
				return nil, err
			}
			found = found || ok
		}
		if !found {
			missing = append(missing, d)
		}
		c.done[d] = true
	}
	return missing, nil
}

// copy copies d from one store into another, and reports whether from had it.
func (c *objectCopier) copy(ctx context.Context, from, to *events.Objects, d string) (bool, error) {
	if ok, err := to.Has(ctx, d); err != nil || ok {
		return ok, err
	}
	r, err := from.Get(ctx, d)
	if errors.Is(err, events.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer r.Close()
	got, _, err := to.Put(ctx, r)
	if err == nil && got != d {
		err = fmt.Errorf("copy %s: stored as %s", d, got)
	}
	if err != nil {
		return false, err
	}
	c.copied++
	return true, nil
}
