package graph

import (
	"bytes"
	"fmt"
	"html"
	"slices"
	"sort"
	"strings"

	"github.com/troupe-dev/troupe/events"
)

// Nobody is the node the drawing gives an orphan type's missing end.
const Nobody = "nobody"

// Layout sizes of SVG.
const (
	nodeW, nodeH = 150, 40
	colGap       = 270
	rowGap       = 110
	margin       = 30
)

// SVG draws the graph left to right: the requesters first, each service in the column of its
// shortest way from them, one arrow per producer and consumer pair labelled with the types it
// carries. Arrows to a column not further right curve below the nodes. An orphan type's arrow
// goes to (or comes from) a dashed "nobody" node and is drawn in the warning colour. Nodes and
// arrows carry data- attributes (data-node, data-from, data-to, data-types) for tools and tests.
func (g *Graph) SVG() []byte {
	type pair struct{ from, to string }
	labels := map[pair][]string{}
	var pairs []pair
	add := func(p pair, t string) {
		if _, ok := labels[p]; !ok {
			pairs = append(pairs, p)
		}
		if !slices.Contains(labels[p], t) {
			labels[p] = append(labels[p], t)
		}
	}
	for _, e := range g.Edges {
		add(pair{e.From, e.To}, e.Type)
	}
	orphan := map[pair]bool{}
	for _, t := range g.Orphans {
		from, to := g.orphanEnds(t)
		for _, f := range from {
			p := pair{f, Nobody}
			add(p, t)
			orphan[p] = true
		}
		for _, c := range to {
			p := pair{Nobody, c}
			add(p, t)
			orphan[p] = true
		}
	}

	// Columns: breadth first from the requesters; the rest after the last.
	col := map[string]int{Requesters: 0}
	queue := []string{Requesters}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		for _, p := range pairs {
			if p.from == n && p.to != Nobody {
				if _, seen := col[p.to]; !seen {
					col[p.to] = col[n] + 1
					queue = append(queue, p.to)
				}
			}
		}
	}
	last := 0
	for _, c := range col {
		last = max(last, c)
	}
	nodes := []string{Requesters}
	for _, s := range g.Services {
		nodes = append(nodes, s.Name)
	}
	for _, p := range pairs {
		for _, n := range []string{p.from, p.to} {
			if !slices.Contains(nodes, n) {
				nodes = append(nodes, n)
			}
		}
	}
	for _, n := range nodes {
		if _, ok := col[n]; !ok {
			col[n] = last + 1
		}
	}
	byCol := map[int][]string{}
	for _, n := range nodes {
		byCol[col[n]] = append(byCol[col[n]], n)
	}
	type point struct{ x, y int }
	at := map[string]point{}
	cols, rows := 0, 0
	for c, ns := range byCol {
		sort.Strings(ns)
		for i, n := range ns {
			at[n] = point{margin + c*colGap, margin + i*rowGap}
		}
		cols, rows = max(cols, c+1), max(rows, len(ns))
	}
	width := 2*margin + (cols-1)*colGap + nodeW
	height := 2*margin + (rows-1)*rowGap + nodeH + rowGap // room below for the arrows that curve back

	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" class="graph" viewBox="0 0 %d %d" width="%d" height="%d" font-family="sans-serif" font-size="11">`+"\n", width, height, width, height)
	b.WriteString(`<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="context-stroke"/></marker></defs>` + "\n")
	for _, p := range pairs {
		a, z := at[p.from], at[p.to]
		var d string
		var lx, ly int
		if col[p.to] > col[p.from] {
			x1, y1, x2, y2 := a.x+nodeW, a.y+nodeH/2, z.x, z.y+nodeH/2
			mid := (x1 + x2) / 2
			d = fmt.Sprintf("M%d,%d C%d,%d %d,%d %d,%d", x1, y1, mid, y1, mid, y2, x2, y2)
			lx, ly = mid, (y1+y2)/2-4
		} else {
			x1, y1, x2, y2 := a.x+nodeW/2, a.y+nodeH, z.x+nodeW/2+12, z.y+nodeH
			dip := max(y1, y2) + rowGap*2/3
			d = fmt.Sprintf("M%d,%d C%d,%d %d,%d %d,%d", x1, y1, x1, dip, x2, dip, x2, y2)
			lx, ly = (x1+x2)/2, dip-10
		}
		class := "edge"
		if orphan[p] {
			class = "edge orphan"
		}
		ts := labels[p]
		short := make([]string, len(ts))
		for i, t := range ts {
			short[i] = strings.TrimPrefix(t, "release.")
		}
		fmt.Fprintf(&b, `<g class="%s" data-from="%s" data-to="%s" data-types="%s"><path d="%s" fill="none" marker-end="url(#arrow)"/>`,
			class, esc(p.from), esc(p.to), esc(strings.Join(ts, " ")), d)
		fmt.Fprintf(&b, `<title>%s → %s: %s</title>`, esc(p.from), esc(p.to), esc(strings.Join(ts, ", ")))
		for i, s := range short {
			fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">%s</text>`, lx, ly-(len(short)-1-i)*12, esc(s))
		}
		b.WriteString("</g>\n")
	}
	for _, n := range nodes {
		p := at[n]
		class := "node"
		switch n {
		case Requesters:
			class = "node requesters"
		case Nobody:
			class = "node nobody"
		}
		title := n
		if s := g.service(n); s != nil {
			title = fmt.Sprintf("%s: %d instance(s), %s", n, s.Instances, s.Version)
		}
		fmt.Fprintf(&b, `<g class="%s" data-node="%s"><title>%s</title><rect x="%d" y="%d" width="%d" height="%d" rx="6"/><text x="%d" y="%d" text-anchor="middle" font-size="13">%s</text></g>`+"\n",
			class, esc(n), esc(title), p.x, p.y, nodeW, nodeH, p.x+nodeW/2, p.y+nodeH/2+4, esc(n))
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}

// orphanEnds returns the producers of orphan type t when nobody consumes it, or its consumers
// when nobody produces it.
func (g *Graph) orphanEnds(t string) (producers, consumers []string) {
	if t == "" {
		return nil, nil
	}
	if slices.Contains([]string{events.TypeRequested, events.TypeRollbackRequested, events.TypeUninstallRequested}, t) {
		producers = append(producers, Requesters)
	}
	for _, s := range g.Services {
		if slices.Contains(s.Produces, t) {
			producers = append(producers, s.Name)
		}
		if slices.Contains(s.Consumes, t) {
			consumers = append(consumers, s.Name)
		}
	}
	if len(consumers) > 0 {
		return nil, consumers
	}
	return producers, nil
}

func (g *Graph) service(name string) *Service {
	for i := range g.Services {
		if g.Services[i].Name == name {
			return &g.Services[i]
		}
	}
	return nil
}

func esc(s string) string { return html.EscapeString(s) }
