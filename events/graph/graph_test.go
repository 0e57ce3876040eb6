package graph_test

import (
	"encoding/xml"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/graph"
)

func info(name, version string, consumes, produces []string) micro.Info {
	return micro.Info{ServiceIdentity: micro.ServiceIdentity{Name: name, Version: version,
		Metadata: map[string]string{events.MetaConsumes: strings.Join(consumes, ","), events.MetaProduces: strings.Join(produces, ",")}}}
}

// TestBuildAndDraw: the graph folds the services' descriptions (instances and versions counted,
// other systems' and non-troupe services left out), flags a type nobody consumes and one nobody
// produces, and draws every edge and orphan as valid SVG with the data attributes tools read.
func TestBuildAndDraw(t *testing.T) {
	sandbox := info("renderer", "0.2.0", []string{events.TypeRequested}, []string{events.TypeRendered})
	sandbox.Metadata[events.MetaSubjects] = "sandbox.release.>"
	g := graph.Build([]micro.Info{
		info("renderer", "0.1.0", []string{events.TypeRequested}, []string{events.TypeRendered}),
		info("renderer", "0.1.1", []string{events.TypeRequested}, []string{events.TypeRendered}),
		info("applier", "0.1.0", []string{events.TypeRendered}, []string{events.TypeApplied}),
		info("gate", "0.1.0", []string{"release.approved"}, nil),
		sandbox,
		{ServiceIdentity: micro.ServiceIdentity{Name: "history-queries"}},
	}, events.Names{})

	require.Len(t, g.Services, 3)
	assert.Equal(t, "renderer", g.Services[2].Name)
	assert.Equal(t, 2, g.Services[2].Instances)
	assert.Equal(t, "0.1.0, 0.1.1", g.Services[2].Version)
	assert.Contains(t, g.Edges, graph.Edge{From: "cli", Type: events.TypeRequested, To: "renderer"})
	assert.Contains(t, g.Edges, graph.Edge{From: "renderer", Type: events.TypeRendered, To: "applier"})
	assert.ElementsMatch(t, []string{events.TypeApplied, "release.approved", events.TypeRollbackRequested, events.TypeUninstallRequested}, g.Orphans)
	assert.Contains(t, g.Warnings, "release.approved: consumed by gate, produced by nobody")
	assert.Contains(t, g.Warnings, "release.applied: produced by applier, consumed by nobody")

	svg := g.SVG()
	require.NoError(t, xml.Unmarshal(svg, new(any)), "well-formed XML")
	s := string(svg)
	for _, want := range []string{
		`data-node="cli"`, `data-node="renderer"`, `data-node="applier"`, `data-node="gate"`, `data-node="nobody"`,
		`class="edge" data-from="renderer" data-to="applier" data-types="release.rendered"`,
		`class="edge orphan" data-from="applier" data-to="nobody" data-types="release.applied"`,
		`class="edge orphan" data-from="nobody" data-to="gate" data-types="release.approved"`,
		`class="edge orphan" data-from="cli" data-to="nobody"`,
	} {
		assert.Contains(t, s, want)
	}
}

// TestOddServices: services named as the drawing's own nodes, with control characters, or
// nothing at all still make a well-formed drawing, each service its own node.
func TestOddServices(t *testing.T) {
	g := graph.Build([]micro.Info{
		info("cli", "1", []string{events.TypeReady}, nil),
		info("nobody", "1", nil, []string{events.TypeRequested}),
		info("odd\x01name", "1", []string{events.TypeRequested}, []string{"release.odd\x02"}),
	}, events.Names{})
	require.NoError(t, xml.Unmarshal(g.SVG(), new(any)), "well-formed XML")
	var names []string
	for _, s := range g.Services {
		names = append(names, s.Name)
	}
	assert.Contains(t, names, "cli (service)")
	assert.Contains(t, names, "nobody (service)")
	assert.Contains(t, string(g.SVG()), `data-node="cli (service)"`)

	empty := graph.Build(nil, events.Names{})
	assert.NotNil(t, empty.Edges, "an empty list, not null, for the page")
	require.NoError(t, xml.Unmarshal(empty.SVG(), new(any)))
}
