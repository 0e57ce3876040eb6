// Package graph discovers the choreography from the running services — who consumes and
// produces which event types, as each says in its NATS service description ($SRV.INFO) — and
// draws it. `troupe graph` prints it; the web UI draws it as SVG (SVG).
//
// Nothing in it is hand-drawn: a service that joins (a user's subscriber, a gate) appears with
// its edges the next time anyone asks, and a type nobody consumes, or consumed but produced by
// nobody, is flagged.
package graph

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/troupe-dev/troupe/events"
)

// Graph is who consumes and produces which event types, as the running services say.
type Graph struct {
	Services []Service `json:"services"`
	Edges    []Edge    `json:"edges"`
	Warnings []string  `json:"warnings,omitempty"`
	// Orphans are the types a warning is about: produced and consumed by nobody, or consumed and
	// produced by nobody.
	Orphans []string `json:"orphans,omitempty"`
}

// Service is one service, however many instances answer.
type Service struct {
	Name      string   `json:"name"`
	Version   string   `json:"version"` // the versions its instances run, comma-separated
	Instances int      `json:"instances"`
	Consumes  []string `json:"consumes"`
	Produces  []string `json:"produces"`
}

// Edge is one event type going from a producer to a consumer.
type Edge struct {
	From string `json:"from"`
	Type string `json:"type"`
	To   string `json:"to"`
}

// Requesters is what publishes requests from outside the services: people and their tools (the
// CLI, the web UI, any NATS client with the cli identity's rights).
const Requesters = "cli"

// Discover asks every running troupe service of the system names for its description
// ($SRV.INFO) on nc, gathers the answers for wait, and builds the graph. It fails when no
// troupe service answered.
func Discover(ctx context.Context, nc *nats.Conn, names events.Names, wait time.Duration) (*Graph, error) {
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest("$SRV.INFO", inbox, nil); err != nil {
		return nil, err
	}
	var infos []micro.Info
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		msg, err := sub.NextMsgWithContext(wctx)
		if err != nil {
			break // the time is up
		}
		var info micro.Info
		if json.Unmarshal(msg.Data, &info) == nil {
			infos = append(infos, info)
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	g := Build(infos, names)
	if len(g.Services) == 0 {
		return nil, fmt.Errorf("no troupe service answered on $SRV.INFO within %s: start 'troupe dev' or the services", wait)
	}
	return g, nil
}

// Build folds services' descriptions into the graph of the system names: descriptions that are
// not a troupe service's (history's queries, other micro services) or another system's (a
// sandbox's) are left out.
func Build(infos []micro.Info, names events.Names) *Graph {
	byName := map[string]*Service{}
	versions := map[string][]string{} // by service, sorted
	for _, info := range infos {
		cons, prod := info.Metadata[events.MetaConsumes], info.Metadata[events.MetaProduces]
		if cons == "" && prod == "" {
			continue
		}
		if subj := info.Metadata[events.MetaSubjects]; subj != "" && subj != names.ReleaseSubjects() {
			continue
		}
		name := info.Name
		if name == Requesters || name == Nobody {
			name += " (service)" // not the drawing's own nodes
		}
		s := byName[name]
		if s == nil {
			s = &Service{Name: name, Consumes: split(cons), Produces: split(prod)}
			byName[name] = s
		}
		s.Instances++
		if vs := versions[name]; !slices.Contains(vs, info.Version) {
			vs = append(vs, info.Version)
			slices.Sort(vs)
			versions[name], s.Version = vs, strings.Join(vs, ", ")
		}
	}
	g := &Graph{Services: []Service{}, Edges: []Edge{}}
	producers, consumers := map[string][]string{}, map[string][]string{}
	for _, t := range []string{events.TypeRequested, events.TypeRollbackRequested, events.TypeUninstallRequested} {
		producers[t] = append(producers[t], Requesters)
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
			g.Orphans = append(g.Orphans, t)
		case len(ps) == 0:
			g.Warnings = append(g.Warnings, fmt.Sprintf("%s: consumed by %s, produced by nobody", t, strings.Join(cs, ", ")))
			g.Orphans = append(g.Orphans, t)
		}
		for _, p := range ps {
			for _, c := range cs {
				if p != c {
					g.Edges = append(g.Edges, Edge{From: p, Type: t, To: c})
				}
			}
		}
	}
	sort.SliceStable(g.Edges, func(i, j int) bool { return g.Edges[i].From < g.Edges[j].From })
	return g
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// Types returns the event types of the edges, sorted.
func (g *Graph) Types() []string {
	var out []string
	for _, e := range g.Edges {
		if !slices.Contains(out, e.Type) {
			out = append(out, e.Type)
		}
	}
	slices.Sort(out)
	return out
}

// Ends returns the producers and consumers of type t.
func (g *Graph) Ends(t string) (from, to []string) {
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
