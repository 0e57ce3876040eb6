package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/historyapi"
)

// TraceEvent is one event of a trace.
type TraceEvent struct {
	Sequence uint64    `json:"sequence"`
	Time     time.Time `json:"time"`
	Offset   string    `json:"offset"` // since the first event of the trace
	Type     string    `json:"type"`
	Source   string    `json:"source"`
	ID       string    `json:"id"`
	Revision int       `json:"revision,omitempty"`
	Detail   string    `json:"detail,omitempty"`
}

// TraceStage is how long one stage took.
type TraceStage struct {
	Stage    string `json:"stage"`
	From     string `json:"from"`
	To       string `json:"to"`
	Duration string `json:"duration"`
}

// Trace is one revision's way through the services, rebuilt from the stream.
type Trace struct {
	Release  string       `json:"release"`
	Revision int          `json:"revision"`
	Events   []TraceEvent `json:"events"`
	Stages   []TraceStage `json:"stages"`
	// Ended is the last terminal event's type without "release." (ready, failed, …); empty
	// while the revision is still going.
	Ended string `json:"ended,omitempty"`
	// Stopped says where and why a failed revision stopped.
	Stopped string `json:"stopped,omitempty"`
}

func (c *cli) traceCmd() *cobra.Command {
	var ns string
	var revision int
	var out output
	cmd := &cobra.Command{
		Use:   "trace NAME [--revision N] [-n NS]",
		Short: "Show a revision's way through the services: every event, each stage's time, where it stopped",
		Long: `Rebuild one revision's cross-service timeline from the events stream: every event of its flows
(the request, and any rollback that restored it) with its time, its source and what it says, one
column per service; then how long each stage took, and where the revision stopped and why.
Default: the latest revision.`,
		Args: exactArgs(1, "trace takes the release NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			rel, err := releaseArg(args[0], ns)
			if err != nil {
				return err
			}
			nc, js, err := c.connect("troupe-cli")
			if err != nil {
				return err
			}
			defer nc.Close()
			tr, err := trace(cmd.Context(), js, c.names, rel, revision)
			if err != nil {
				return err
			}
			return out.print(c.stdout, tr, func(tw *tabwriter.Writer) { printTrace(c, tr) })
		},
	}
	namespaceFlag(cmd, &ns)
	cmd.Flags().IntVar(&revision, "revision", 0, "the revision (default: the latest)")
	out.bind(cmd)
	return cmd
}

type streamed struct {
	seq uint64
	e   event.Event
}

// readRelease reads every event of rel in the stream, oldest first.
func readRelease(ctx context.Context, js jetstream.JetStream, names events.Names, rel events.Release) ([]streamed, error) {
	filter, err := names.ReleaseFilter(rel)
	if err != nil {
		return nil, err
	}
	cons, err := js.OrderedConsumer(ctx, names.Stream(), jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		return nil, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, err
	}
	var out []streamed
	if info.NumPending == 0 {
		return nil, nil
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, err
	}
	defer it.Stop()
	for {
		msg, err := it.Next(jetstream.NextMaxWait(5 * time.Second))
		if errors.Is(err, nats.ErrTimeout) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		md, err := msg.Metadata()
		if err != nil {
			return nil, err
		}
		if e, err := names.Decode(msg.Subject(), msg.Headers(), msg.Data()); err == nil {
			out = append(out, streamed{seq: md.Sequence.Stream, e: e})
		}
		if md.NumPending == 0 {
			return out, nil
		}
	}
}

// trace rebuilds revision (0: the latest) of rel from the stream.
func trace(ctx context.Context, js jetstream.JetStream, names events.Names, rel events.Release, revision int) (*Trace, error) {
	all, err := readRelease(ctx, js, names, rel)
	if err != nil {
		return nil, fmt.Errorf("read %s from the stream: %w", rel, err)
	}
	revs, err := events.NewRevisions(ctx, js, names)
	if err != nil {
		return nil, err
	}
	// Number the requests (the numbers every service uses), then keep the flows of the revision.
	latest := 0
	revOf := map[string]int{} // correlation id → revision
	for i, s := range all {
		if s.e.Type() == events.TypeRequested {
			n, err := revs.Of(ctx, rel, s.seq)
			if err != nil {
				return nil, err
			}
			all[i].e.SetExtension(events.ExtRevision, n)
			revOf[s.e.ID()] = n
			latest = max(latest, n)
		}
	}
	if latest == 0 {
		return nil, fmt.Errorf("%s: no release.requested in the stream", rel)
	}
	if revision == 0 {
		revision = latest
	} else if revision > latest {
		return nil, fmt.Errorf("%s has no revision %d (the latest is %d)", rel, revision, latest)
	}
	flows := map[string]bool{}
	for _, s := range all {
		if events.Revision(s.e) == revision {
			flows[events.CorrelationID(s.e)] = true
		}
	}
	tr := &Trace{Release: rel.String(), Revision: revision}
	var first time.Time
	for _, s := range all {
		if !flows[events.CorrelationID(s.e)] && !(s.e.Type() == events.TypeRequested && revOf[s.e.ID()] == revision) {
			continue
		}
		t := s.e.Time()
		if first.IsZero() {
			first = t
		}
		tr.Events = append(tr.Events, TraceEvent{Sequence: s.seq, Time: t, Offset: t.Sub(first).Round(time.Millisecond).String(),
			Type: s.e.Type(), Source: s.e.Source(), ID: s.e.ID(), Revision: events.Revision(s.e), Detail: detail(s.e)})
	}
	tr.Stages, tr.Ended, tr.Stopped = stages(tr.Events, all)
	return tr, nil
}

// stages measures each stage from the end of the one before, and says how the revision ended.
func stages(evs []TraceEvent, all []streamed) (out []TraceStage, ended, stopped string) {
	var last TraceEvent
	for i, e := range evs {
		var stage string
		switch e.Type {
		case events.TypeRendered:
			stage = "render"
			if strings.HasSuffix(e.Source, "/history") {
				stage = "rollback"
			}
		case events.TypeApplied, events.TypeDiffed, events.TypeUninstalled:
			stage = "apply"
		case events.TypeReady:
			stage = "health"
		case events.TypeFailed, events.TypeSuperseded:
			stage = "stopped"
		}
		if i == 0 {
			last = e
			continue
		}
		if stage != "" {
			out = append(out, TraceStage{Stage: stage, From: strings.TrimPrefix(last.Type, "release."), To: strings.TrimPrefix(e.Type, "release."),
				Duration: e.Time.Sub(last.Time).Round(time.Millisecond).String()})
			last = e
		}
		if spec, ok := events.Lookup(e.Type); ok && spec.Terminal {
			ended = strings.TrimPrefix(e.Type, "release.")
			if (e.Type == events.TypeFailed || e.Type == events.TypeSuperseded) && stopped == "" {
				stopped = strings.TrimPrefix(e.Type, "release.") + " " + e.Detail // the first stop, even when a rollback followed
			}
		}
	}
	return out, ended, stopped
}

// detail says in a few words what an event carries.
func detail(e event.Event) string {
	switch e.Type() {
	case events.TypeRequested:
		d, _ := events.Data[events.Requested](e)
		return shortDigests(historyapi.DescribeSource(d.Source))
	case events.TypeRendered:
		d, _ := events.Data[events.Rendered](e)
		s := fmt.Sprintf("%d objects", len(d.Objects))
		if d.Rollback {
			s += ", recorded bundle"
		}
		return s
	case events.TypeApplied:
		d, _ := events.Data[events.Applied](e)
		return fmt.Sprintf("%d objects, %d pruned", len(d.Inventory), len(d.Pruned))
	case events.TypeProgressing:
		d, _ := events.Data[events.Progressing](e)
		return fmt.Sprintf("ready %d/%d", d.Ready, d.Total)
	case events.TypeReady:
		d, _ := events.Data[events.Ready](e)
		return fmt.Sprintf("%d objects, %s after the request", d.Objects, time.Duration(d.TimeToReady).Round(time.Millisecond))
	case events.TypeFailed:
		d, _ := events.Data[events.Failed](e)
		return fmt.Sprintf("at %s: %s: %s", d.Stage, d.Reason, firstLine(d.Message))
	case events.TypeSuperseded:
		d, _ := events.Data[events.Superseded](e)
		return fmt.Sprintf("at %s by revision %d", d.Stage, d.ByRevision)
	case events.TypeRollbackRequested:
		d, _ := events.Data[events.RollbackRequested](e)
		s := "to the previous ready revision"
		if d.TargetRevision > 0 {
			s = fmt.Sprintf("to revision %d", d.TargetRevision)
		}
		if d.Automatic {
			s += " (automatic)"
		}
		return s
	case events.TypeDegraded:
		d, _ := events.Data[events.Degraded](e)
		return fmt.Sprintf("%d objects", len(d.Objects))
	}
	return ""
}

// printTrace draws the trace as a swimlane: one column per source, one row per event.
func printTrace(c *cli, tr *Trace) {
	lanes := []string{}
	for _, e := range tr.Events {
		l := strings.TrimPrefix(e.Source, events.SourcePrefix)
		if !slices.Contains(lanes, l) {
			lanes = append(lanes, l)
		}
	}
	order := []string{"cli", "renderer", "applier", "health", "history"}
	slices.SortStableFunc(lanes, func(a, b string) int {
		ia, ib := slices.Index(order, a), slices.Index(order, b)
		if ia < 0 {
			ia = len(order)
		}
		if ib < 0 {
			ib = len(order)
		}
		return ia - ib
	})
	const w = 14
	fmt.Fprintf(c.stdout, "%s revision %d\n\n", tr.Release, tr.Revision)
	fmt.Fprintf(c.stdout, "%9s %8s  ", "TIME", "+DELTA")
	for _, l := range lanes {
		fmt.Fprintf(c.stdout, "%-*s", w, events.Truncate(l, w-1))
	}
	fmt.Fprintln(c.stdout, "DETAIL")
	var prev time.Time
	for i, e := range tr.Events {
		delta := ""
		if i > 0 {
			delta = "+" + fmtDur(e.Time.Sub(prev))
		}
		prev = e.Time
		fmt.Fprintf(c.stdout, "%9s %8s  ", fmtDur(e.Time.Sub(tr.Events[0].Time)), delta)
		lane := strings.TrimPrefix(e.Source, events.SourcePrefix)
		for _, l := range lanes {
			cell := "│"
			if l == lane {
				cell = "● " + strings.TrimPrefix(e.Type, "release.")
			}
			fmt.Fprintf(c.stdout, "%-*s", w, cell)
		}
		fmt.Fprintln(c.stdout, e.Detail)
	}
	fmt.Fprintln(c.stdout)
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STAGE\tFROM\tTO\tTOOK")
	for _, s := range tr.Stages {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Stage, s.From, s.To, s.Duration)
	}
	tw.Flush()
	fmt.Fprintln(c.stdout)
	switch {
	case tr.Stopped != "":
		fmt.Fprintf(c.stdout, "ENDED: %s — %s\n", tr.Ended, tr.Stopped)
	case tr.Ended != "":
		fmt.Fprintf(c.stdout, "ENDED: %s\n", tr.Ended)
	default:
		fmt.Fprintf(c.stdout, "NOT ENDED: the last event is %s from %s\n", tr.Events[len(tr.Events)-1].Type, tr.Events[len(tr.Events)-1].Source)
	}
}

func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	}
	return d.Round(10 * time.Millisecond).String()
}
