package render

import (
	"sync"

	chart "helm.sh/helm/v4/pkg/chart/v2"
)

// charts keeps loaded charts by digest. An uploaded chart never changes, so loading (unpacking,
// parsing Chart.yaml and values.yaml) happens once per digest however many releases and values
// render it. Rendering changes a chart (Helm drops disabled subcharts and imports values into it),
// so each render gets a copy of the parts it may change; templates and files are shared.
type charts struct {
	mu     sync.Mutex
	max    int
	byHash map[string]*chart.Chart
	order  []string // oldest first
}

func newCharts(max int) *charts { return &charts{max: max, byHash: map[string]*chart.Chart{}} }

// get returns a render-safe copy of the chart stored under digest, loading it with load once.
func (c *charts) get(digest string, load func() (*chart.Chart, error)) (*chart.Chart, error) {
	c.mu.Lock()
	ch, ok := c.byHash[digest]
	c.mu.Unlock()
	if !ok {
		var err error
		if ch, err = load(); err != nil {
			return nil, err
		}
		c.mu.Lock()
		if _, dup := c.byHash[digest]; !dup {
			c.byHash[digest] = ch
			c.order = append(c.order, digest)
			for len(c.order) > c.max {
				delete(c.byHash, c.order[0])
				c.order = c.order[1:]
			}
		}
		c.mu.Unlock()
	}
	return copyChart(ch), nil
}

// copyChart copies what rendering may change: metadata (dependency flags), values, and the
// dependency tree (which subcharts are enabled). Templates, files and schema are shared.
func copyChart(c *chart.Chart) *chart.Chart {
	out := *c
	if c.Metadata != nil {
		md := *c.Metadata
		md.Dependencies = make([]*chart.Dependency, len(c.Metadata.Dependencies))
		for i, d := range c.Metadata.Dependencies {
			dc := *d
			dc.Tags = append([]string(nil), d.Tags...)
			dc.ImportValues = append([]any(nil), d.ImportValues...)
			md.Dependencies[i] = &dc
		}
		out.Metadata = &md
	}
	out.Values = copyValues(c.Values)
	out.SetDependencies()
	for _, d := range c.Dependencies() {
		out.AddDependency(copyChart(d))
	}
	return &out
}

func copyValues(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = copyValue(v)
	}
	return out
}

func copyValue(v any) any {
	switch t := v.(type) {
	case map[string]any:
		return copyValues(t)
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = copyValue(e)
		}
		return out
	default:
		return v
	}
}
