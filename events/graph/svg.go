package graph

import (
	"bytes"
	"fmt"
	"html"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/troupe-dev/troupe/events"
)

// Nobody is the node the drawing gives an orphan type's missing end.
const Nobody = "nobody"

// Layout sizes of SVG.
const (
	nodeW, nodeH = 130, 40
	colGap       = 200
	rowGap       = 80
	arcStep      = 34 // how much higher (lower) an arc rises (dips) per column it spans
	margin       = 20
)

// pair is a producer and a consumer, and the types between them.
type pair struct{ from, to string }

// SVG draws the graph left to right. Services are ordered so that as many arrows as possible
// point right (Eades, Lin and Smyth's greedy heuristic for the feedback arc set, weighted by the
// types an arrow carries: the requesters first, the flow's later services after the earlier
// ones), and each goes in the column of its longest way from the first. An arrow to the next
// column is drawn straight across; one that skips columns arcs above them, and one that points
// back arcs below, each the further the more columns it spans. An arrow carries its types' names
// (or how many, when more than two; all of them in its tooltip). An orphan type's arrow goes to
// (or comes from) a dashed "nobody" node in the warning colour. Nodes and arrows carry data-
// attributes (data-node, data-from, data-to, data-types) for tools and tests.
func (g *Graph) SVG() []byte {
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
	order := linearOrder(nodes, pairs, labels)
	pos := map[string]int{}
	for i, n := range order {
		pos[n] = i
	}
	// Columns: the longest way from the first over the arrows that point right.
	col := map[string]int{}
	for _, n := range order {
		for _, p := range pairs {
			if p.to == n && pos[p.from] < pos[n] {
				col[n] = max(col[n], col[p.from]+1)
			}
		}
	}
	byCol := map[int][]string{}
	cols, rows := 0, 0
	for _, n := range order {
		byCol[col[n]] = append(byCol[col[n]], n)
		cols, rows = max(cols, col[n]+1), max(rows, len(byCol[col[n]]))
	}
	span := func(p pair) int { return col[p.to] - col[p.from] }
	above, below := 0, 0
	for _, p := range pairs {
		if d := span(p); d > 1 {
			above = max(above, d)
		} else if d <= 0 {
			below = max(below, 1-d)
		}
	}
	top := margin + above*arcStep + 24
	type point struct{ x, y int }
	at := map[string]point{}
	for c, ns := range byCol {
		for i, n := range ns {
			at[n] = point{margin + c*colGap, top + i*rowGap}
		}
	}
	width := 2*margin + (cols-1)*colGap + nodeW
	height := top + (rows-1)*rowGap + nodeH + below*arcStep + 24 + margin

	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" class="graph" viewBox="0 0 %d %d" width="%d" height="%d" font-family="sans-serif" font-size="11">`+"\n", width, height, width, height)
	b.WriteString(`<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="context-stroke"/></marker></defs>` + "\n")
	for _, p := range pairs {
		a, z := at[p.from], at[p.to]
		var d string
		var lx, ly int
		switch n := span(p); {
		case n == 1:
			x1, y1, x2, y2 := a.x+nodeW, a.y+nodeH/2, z.x, z.y+nodeH/2
			mid := (x1 + x2) / 2
			d = fmt.Sprintf("M%d,%d C%d,%d %d,%d %d,%d", x1, y1, mid, y1, mid, y2, x2, y2)
			lx, ly = mid, (y1+y2)/2-6
		case n > 1: // over the columns between
			x1, y1, x2, y2 := a.x+nodeW*3/4, a.y, z.x+nodeW/4, z.y
			rise := min(y1, y2) - n*arcStep
			d = fmt.Sprintf("M%d,%d C%d,%d %d,%d %d,%d", x1, y1, x1, rise, x2, rise, x2, y2)
			lx, ly = (x1+x2)/2, (y1+y2+6*rise)/8-4
		default: // back, below
			x1, y1, x2, y2 := a.x+nodeW/4, a.y+nodeH, z.x+nodeW*3/4, z.y+nodeH
			dip := max(y1, y2) + (1-n)*arcStep
			d = fmt.Sprintf("M%d,%d C%d,%d %d,%d %d,%d", x1, y1, x1, dip, x2, dip, x2, y2)
			lx, ly = (x1+x2)/2, (y1+y2+6*dip)/8+12
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
		text := strings.Join(short, ", ")
		if len(short) > 2 {
			text = fmt.Sprintf("%d types", len(short))
		}
		fmt.Fprintf(&b, `<g class="%s" data-from="%s" data-to="%s" data-types="%s"><title>%s → %s: %s</title><path d="%s" fill="none" marker-end="url(#arrow)"/><text x="%d" y="%d" text-anchor="middle">%s</text></g>`+"\n",
			class, esc(p.from), esc(p.to), esc(strings.Join(ts, " ")), esc(p.from), esc(p.to), esc(strings.Join(ts, ", ")), d, lx, ly, esc(text))
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

// linearOrder orders nodes so that the arrows pointing back carry few types: Eades, Lin and
// Smyth's greedy heuristic, weighted by the types of each arrow. Sources go left, sinks right,
// and otherwise the node whose outgoing types most exceed its incoming ones goes left; the
// requesters always first; ties by name.
func linearOrder(nodes []string, pairs []pair, labels map[pair][]string) []string {
	left := []string{Requesters}
	var right []string
	rest := slices.Clone(nodes)
	rest = slices.DeleteFunc(rest, func(n string) bool { return n == Requesters })
	sort.Strings(rest)
	weight := func(n string, out bool) int {
		w := 0
		for _, p := range pairs {
			if p.from == p.to {
				continue
			}
			other, end := p.to, p.from
			if !out {
				other, end = p.from, p.to
			}
			if end == n && slices.Contains(rest, other) {
				w += len(labels[p])
			}
		}
		return w
	}
	for len(rest) > 0 {
		if i := slices.IndexFunc(rest, func(n string) bool { return weight(n, false) == 0 }); i >= 0 {
			left = append(left, rest[i])
			rest = slices.Delete(rest, i, i+1)
			continue
		}
		if i := slices.IndexFunc(rest, func(n string) bool { return weight(n, true) == 0 }); i >= 0 {
			right = append([]string{rest[i]}, right...)
			rest = slices.Delete(rest, i, i+1)
			continue
		}
		best := 0
		for i, n := range rest {
			if weight(n, true)-weight(n, false) > weight(rest[best], true)-weight(rest[best], false) {
				best = i
			}
		}
		left = append(left, rest[best])
		rest = slices.Delete(rest, best, best+1)
	}
	return append(left, right...)
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

// esc escapes s for SVG text and attributes, leaving out what XML cannot hold (control
// characters), so that no name a service gives itself breaks the drawing.
func esc(s string) string {
	return html.EscapeString(strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\t' && r != '\n' && r != '\r' || r == 0xFFFE || r == 0xFFFF || r == utf8.RuneError {
			return -1
		}
		return r
	}, s))
}
