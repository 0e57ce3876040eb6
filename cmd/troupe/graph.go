package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/micro"
	"github.com/spf13/cobra"

	"github.com/troupe-dev/troupe/events"
)

// Graph is who consumes and produces which event types, as the running services say.
type Graph struct {
	Services []GraphService `json:"services"`
	Edges    []GraphEdge    `json:"edges"`
	Warnings []string       `json:"warnings,omitempty"`
}

// GraphService is one service, however many instances answer.
type GraphService struct {
	Name      string   `json:"name"`
	Version   string   `json:"version"` // the versions its instances run, comma-separated
	Instances int      `json:"instances"`
	Consumes  []string `json:"consumes"`
	Produces  []string `json:"produces"`
}

// GraphEdge is one event type going from a producer to a consumer.
type GraphEdge struct {
	From string `json:"from"`
	Type string `json:"type"`
	To   string `json:"to"`
}

// requesters are what publishes requests from outside the services: people and their tools.
const requesters = "cli"

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
				for _, t := range g.types() {
					from, to := g.ends(t)
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

// discover connects, gathers the running troupe services' $SRV.INFO answers for d and builds
// the graph.
func (c *cli) discover(ctx context.Context, d time.Duration) (*Graph, error) {
	nc, err := c.natsConn("troupe-cli")
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest("$SRV.INFO", inbox, nil); err != nil {
		return nil, err
	}
	byName := map[string]*GraphService{}
	versions := map[string][]string{} // by service, sorted
	deadline := time.Now().Add(d)
	for {
		msg, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			break // the time is up
		}
		var info micro.Info
		if json.Unmarshal(msg.Data, &info) != nil {
			continue
		}
		cons, prod := info.Metadata[events.MetaConsumes], info.Metadata[events.MetaProduces]
		if cons == "" && prod == "" {
			continue // not a troupe service (history's queries, other micro services)
		}
		if subj := info.Metadata[events.MetaSubjects]; subj != "" && subj != c.names.ReleaseSubjects() {
			continue // a sandbox's, or the live system's when this is a sandbox
		}
		s := byName[info.Name]
		if s == nil {
			s = &GraphService{Name: info.Name, Consumes: split(cons), Produces: split(prod)}
			byName[info.Name] = s
		}
		s.Instances++
		if vs := versions[info.Name]; !slices.Contains(vs, info.Version) {
			vs = append(vs, info.Version)
			slices.Sort(vs)
			versions[info.Name], s.Version = vs, strings.Join(vs, ", ")
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if len(byName) == 0 {
		return nil, fmt.Errorf("no troupe service answered on $SRV.INFO within %s: start 'troupe dev' or the services", d)
	}
	g := &Graph{}
	producers, consumers := map[string][]string{}, map[string][]string{}
	for _, t := range []string{events.TypeRequested, events.TypeRollbackRequested, events.TypeUninstallRequested} {
		producers[t] = append(producers[t], requesters)
	}
	for _, s := range byName {
		g.Services = append(g.Services, *s)
		for _, t := range s.Produces {
			producers[t] = append(producers[t], s.Name)
		}
		for _, t := range s.Consumes {
			consumers[t] = append(consumers[t], s.Name)
		}
	}
	sort.Slice(g.Services, func(i, j int) bool { return g.Services[i].Name < g.Services[j].Name })
	var types []string
	for t := range producers {
		types = append(types, t)
	}
	for t := range consumers {
		if _, ok := producers[t]; !ok {
			types = append(types, t)
		}
	}
	sort.Strings(types)
	for _, t := range types {
		ps, cs := producers[t], consumers[t]
		slices.Sort(ps)
		slices.Sort(cs)
		switch {
		case len(cs) == 0:
			g.Warnings = append(g.Warnings, fmt.Sprintf("%s: produced by %s, consumed by nobody", t, strings.Join(ps, ", ")))
		case len(ps) == 0:
			g.Warnings = append(g.Warnings, fmt.Sprintf("%s: consumed by %s, produced by nobody", t, strings.Join(cs, ", ")))
		}
		for _, p := range ps {
			for _, c := range cs {
				if p != c {
					g.Edges = append(g.Edges, GraphEdge{From: p, Type: t, To: c})
				}
			}
		}
	}
	sort.SliceStable(g.Edges, func(i, j int) bool {
		return g.Edges[i].From < g.Edges[j].From
	})
	return g, nil
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// types returns the event types of the edges, sorted.
func (g *Graph) types() []string {
	var out []string
	for _, e := range g.Edges {
		if !slices.Contains(out, e.Type) {
			out = append(out, e.Type)
		}
	}
	slices.Sort(out)
	return out
}

// ends returns the producers and consumers of type t.
func (g *Graph) ends(t string) (from, to []string) {
	for _, e := range g.Edges {
		if e.Type != t {
			continue
		}
		if !slices.Contains(from, e.From) {
			from = append(from, e.From)
		}
		if !slices.Contains(to, e.To) {
			to = append(to, e.To)
		}
	}
	slices.Sort(from)
	slices.Sort(to)
	return from, to
}
