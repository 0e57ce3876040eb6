package render

import (
	chart "helm.sh/helm/v4/pkg/chart/v2"
)

// loadCached returns a render-safe copy of the chart uploaded under digest, loading it with
// load once. An uploaded chart never changes, so loading (unpacking, parsing Chart.yaml and
// values.yaml) happens once per digest however many releases and values render it. Rendering
// changes a chart (Helm drops disabled subcharts and imports values into it), so each render gets
// a copy of the parts it may change; templates and files are shared.
func (r *Renderer) loadCached(digest string, load func() (*chart.Chart, error)) (*chart.Chart, error) {
	ch, ok := r.charts.get(digest)
	if !ok {
		var err error
		if ch, err = load(); err != nil {
			return nil, err
		}
		r.charts.put(digest, ch)
	}
	return copyChart(ch), nil
}

// copyChart copies what rendering may change: metadata (dependency flags), values of a chart with
// subcharts (Helm imports values from them), and the dependency tree (which subcharts are
// enabled). Templates, files and schema are shared; so are the values of a chart without
// subcharts, which Helm only reads (it coalesces a deep copy of them).
func copyChart(c *chart.Chart) *chart.Chart {
	out := *c
	if c.Metadata != nil {
		md := *c.Metadata
		md.Dependencies = nil // nil, not empty, when there are none: Helm skips its dependency pass then
		if c.Metadata.Dependencies != nil {
			md.Dependencies = make([]*chart.Dependency, len(c.Metadata.Dependencies))
		}
		for i, d := range c.Metadata.Dependencies {
			dc := *d
			dc.Tags = append([]string(nil), d.Tags...)
			dc.ImportValues = append([]any(nil), d.ImportValues...)
			md.Dependencies[i] = &dc
		}
		out.Metadata = &md
	}
	if len(c.Metadata.Dependencies) > 0 || len(c.Dependencies()) > 0 {
		out.Values = copyValues(c.Values) // where Helm imports subchart values
	}
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
