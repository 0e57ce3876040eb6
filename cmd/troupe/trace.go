package main

import (
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/flow"
)

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
			tr, err := flow.ReadTrace(cmd.Context(), js, c.names, rel, revision)
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

// printTrace draws the trace as a swimlane: one column per source, one row per event.
func printTrace(c *cli, tr *flow.Trace) {
	lanes := []string{}
	for _, e := range tr.Events {
		l := strings.TrimPrefix(e.Source, events.SourcePrefix)
		if !slices.Contains(lanes, l) {
			lanes = append(lanes, l)
		}
	}
	// In the flow's order; the gates (gate-<name>) judge between the renderer and the applier.
	order := []string{"cli", "renderer", "gate-", "applier", "health", "history", "deadlines"}
	index := func(lane string) int {
		if strings.HasPrefix(lane, "gate-") {
			lane = "gate-"
		}
		if i := slices.Index(order, lane); i >= 0 {
			return i
		}
		return len(order)
	}
	slices.SortStableFunc(lanes, func(a, b string) int { return index(a) - index(b) })
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
