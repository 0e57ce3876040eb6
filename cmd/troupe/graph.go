package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/troupe-dev/troupe/events/graph"
)

func (c *cli) graphCmd() *cobra.Command {
	var format string
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "graph [-o text|json|dot|mermaid]",
		Short: "Show who consumes and produces which event types, discovered from the running services",
		Long: `Ask every running service for its description ($SRV.INFO): the event types it consumes and
produces. Print the choreography as edges producer --type--> consumer, with warnings for types
nobody consumes and consumers of types nobody produces. The requests (release.requested,
release.rollback.requested, release.uninstall.requested) come from "cli": people and their tools.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch format {
			case "text", "table", "json", "dot", "mermaid":
			default:
				return usagef("--output %q: want text, json, dot or mermaid", format)
			}
			g, err := c.discover(cmd.Context(), wait)
			if err != nil {
				return err
			}
			switch format {
			case "json":
				return output("json").print(c.stdout, g, nil)
			case "dot":
				fmt.Fprintln(c.stdout, "digraph troupe {\n  rankdir=LR;\n  node [shape=box];")
				for _, e := range g.Edges {
					fmt.Fprintf(c.stdout, "  %q -> %q [label=%q];\n", e.From, e.To, e.Type)
				}
				fmt.Fprintln(c.stdout, "}")
			case "mermaid":
				fmt.Fprintln(c.stdout, "flowchart LR")
				for _, e := range g.Edges {
					fmt.Fprintf(c.stdout, "  %s -->|%s| %s\n", mermaidID(e.From), e.Type, mermaidID(e.To))
				}
			default:
				fmt.Fprintln(c.stdout, "SERVICES")
				for _, s := range g.Services {
					fmt.Fprintf(c.stdout, "  %s (%d instance(s), %s)\n    consumes: %s\n    produces: %s\n", s.Name, s.Instances, s.Version,
						dash(strings.Join(s.Consumes, ", ")), dash(strings.Join(s.Produces, ", ")))
				}
				fmt.Fprintln(c.stdout, "\nEVENTS (producers → consumers)")
				for _, t := range g.Types() {
					from, to := g.Ends(t)
					fmt.Fprintf(c.stdout, "  %-28s %s → %s\n", t, dash(strings.Join(from, ", ")), dash(strings.Join(to, ", ")))
				}
				if len(g.Warnings) > 0 {
					fmt.Fprintln(c.stdout, "\nWARNINGS")
					for _, w := range g.Warnings {
						fmt.Fprintln(c.stdout, "  "+w)
					}
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&format, "output", "o", "text", "output: text, json, dot or mermaid")
	cmd.Flags().DurationVar(&wait, "discover-for", time.Second, "how long to gather the services' answers")
	return cmd
}

func mermaidID(s string) string { return strings.NewReplacer("-", "_", ".", "_").Replace(s) }

// discover connects and gathers the running troupe services' $SRV.INFO answers for d into
// the graph.
func (c *cli) discover(ctx context.Context, d time.Duration) (*graph.Graph, error) {
	nc, err := c.natsConn("troupe-cli")
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	return graph.Discover(ctx, nc, c.names, d)
}
