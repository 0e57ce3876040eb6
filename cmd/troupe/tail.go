package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/troupe-dev/troupe/events"
)

type tailOptions struct {
	release     string
	types       []string
	since       time.Duration
	all         bool
	follow      bool
	output      string
	deadLetters bool
}

func (c *cli) tailCmd() *cobra.Command {
	o := tailOptions{}
	cmd := &cobra.Command{
		Use:   "tail [--release NS/NAME] [--since DURATION]",
		Short: "Print events as they happen, one line each",
		Long: `Print release events: time, type, release, revision, source and a short id, one line each.
-o json prints each whole CloudEvent (one JSON object per line). Events that are not valid troupe
CloudEvents are reported on stderr with what is wrong.

By default tail follows new events until interrupted; --since and --all print earlier ones first,
--follow=false stops once it has caught up. --dead-letters prints the dead-letter stream instead:
events a service gave up on, with the service and the reason.`,
		Example: `  troupe tail
  troupe tail --release dev/podinfo --since 1h
  troupe tail --all --follow=false -o json
  troupe tail --dead-letters --all --follow=false`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.tail(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.release, "release", "", "only events of this release (NS/NAME)")
	f.StringSliceVar(&o.types, "type", nil, "only events of these types (repeatable)")
	f.DurationVar(&o.since, "since", 0, "start with events from this long ago, e.g. 10m")
	f.BoolVar(&o.all, "all", false, "start at the beginning of the stream")
	f.BoolVarP(&o.follow, "follow", "f", true, "keep printing new events until interrupted")
	f.StringVarP(&o.output, "output", "o", "text", "output: text or json")
	f.BoolVar(&o.deadLetters, "dead-letters", false, "print the dead-letter stream instead")
	return cmd
}

func (c *cli) tail(ctx context.Context, o tailOptions) error {
	if o.output != "text" && o.output != "json" {
		return usagef("--output %q: want text or json", o.output)
	}
	stream, filters, err := c.tailFilters(o)
	if err != nil {
		return err
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: filters, DeliverPolicy: jetstream.DeliverNewPolicy}
	switch {
	case o.all || (!o.follow && o.since == 0):
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	case o.since > 0:
		start := time.Now().Add(-o.since)
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cfg.OptStartTime = &start
	}

	nc, js, err := c.connect("troupe-tail")
	if err != nil {
		return err
	}
	defer nc.Close()
	cons, err := js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return fmt.Errorf("tail %s: %w", stream, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("tail %s: %w", stream, err)
	}
	defer it.Stop()

	var rel *events.Release
	if o.release != "" {
		r, _ := events.ParseRelease(o.release)
		rel = &r
	}
	for {
		var msg jetstream.Msg
		if o.follow {
			msg, err = it.Next(jetstream.NextContext(ctx))
		} else {
			// Caught up when nothing more arrives: an empty or fully read range ends here.
			msg, err = it.Next(jetstream.NextMaxWait(time.Second))
		}
		switch {
		case err == nil:
		case ctx.Err() != nil, !o.follow && errors.Is(err, nats.ErrTimeout):
			return nil
		case errors.Is(err, jetstream.ErrMsgIteratorClosed):
			return nil
		default:
			return fmt.Errorf("tail %s: %w", stream, err)
		}
		if o.deadLetters {
			c.printDeadLetter(msg, o.output, rel)
		} else {
			c.printEvent(msg, o.output)
		}
		if md, err := msg.Metadata(); !o.follow && err == nil && md.NumPending == 0 {
			return nil
		}
	}
}

func (c *cli) tailFilters(o tailOptions) (string, []string, error) {
	var r events.Release
	if o.release != "" {
		var err error
		if r, err = events.ParseRelease(o.release); err != nil {
			return "", nil, usagef("--release: %w", err)
		}
	}
	if o.deadLetters {
		if len(o.types) > 0 {
			return "", nil, usagef("--type does not go with --dead-letters")
		}
		return c.names.DeadLetterStream(), []string{c.names.DeadLetterSubjects()}, nil
	}
	var filters []string
	for _, typ := range o.types {
		f, err := c.names.TypeFilter(typ)
		switch {
		case o.release == "" || err != nil:
		case events.IsVerdict(typ):
			// Every gate's: <release>.approved.<gate>.
			f, err = c.names.ReleaseFilter(r)
			f = strings.TrimSuffix(f, ">") + strings.TrimPrefix(typ, "release.") + ".*"
		default:
			f, err = c.names.Subject(r, typ)
		}
		if err != nil {
			return "", nil, usagef("--type: %w", err)
		}
		filters = append(filters, f)
	}
	if len(filters) == 0 {
		f := c.names.ReleaseSubjects()
		if o.release != "" {
			f, _ = c.names.ReleaseFilter(r)
		}
		filters = []string{f}
	}
	return c.names.Stream(), filters, nil
}

func (c *cli) printEvent(msg jetstream.Msg, output string) {
	e, err := c.names.Decode(msg.Subject(), msg.Headers(), msg.Data())
	if err != nil {
		fmt.Fprintf(c.stderr, "%s  malformed event on %s: %v\n", msgTime(msg), msg.Subject(), err)
		return
	}
	if output == "json" {
		b, _ := json.Marshal(e)
		fmt.Fprintln(c.stdout, string(b))
		return
	}
	rev := "-"
	if n := events.Revision(e); n > 0 {
		rev = fmt.Sprint(n)
	}
	fmt.Fprintf(c.stdout, "%s  %-28s %-30s rev=%-4s %-18s %s\n",
		e.Time().UTC().Format(timeFormat), e.Type(), e.Subject(), rev, e.Source(), shortID(e.ID()))
}

func (c *cli) printDeadLetter(msg jetstream.Msg, output string, rel *events.Release) {
	dl := events.ParseDeadLetter(msg.Headers(), msg.Data())
	if rel != nil {
		r, _, err := c.names.ParseSubject(dl.Subject)
		if err != nil || r != *rel {
			return
		}
	}
	if output == "json" {
		writeJSONLine(c.stdout, map[string]any{
			"time": dl.Time, "service": dl.Service, "subject": dl.Subject, "reason": dl.Reason,
			"stream": dl.Stream, "sequence": dl.Sequence, "deliveries": dl.Deliveries, "data": string(dl.Data),
		})
		return
	}
	fmt.Fprintf(c.stdout, "%s  %-12s %-45s seq=%-6d %s\n", dl.Time.UTC().Format(timeFormat), dl.Service, dl.Subject, dl.Sequence, dl.Reason)
}

const timeFormat = "2006-01-02T15:04:05.000Z"

func msgTime(msg jetstream.Msg) string {
	if md, err := msg.Metadata(); err == nil {
		return md.Timestamp.UTC().Format(timeFormat)
	}
	return strings.Repeat(" ", len(timeFormat))
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

func writeJSONLine(w io.Writer, v any) {
	b, _ := json.Marshal(v)
	fmt.Fprintln(w, string(b))
}
