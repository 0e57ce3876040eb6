package monitoring_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/model/textparse"
	"github.com/prometheus/prometheus/model/timestamp"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/template"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

// What Prometheus does with troupe's /metrics, reduced to what the rules need: scrape a target
// and label its samples (scrape.go's job), keep them (an in-memory storage.Queryable), and
// evaluate alerting rules on them with the PromQL engine (rules/alerting.go's states).

// target is one service process's /metrics, and the labels a prometheus-operator ServiceMonitor
// gives its samples. The chart's ServiceMonitor honours the scraped labels (honorLabels): on a
// clash the scraped one stays, so the services' own `service` label is what the rules see.
type target struct {
	url    string
	labels labels.Labels
}

// sample is a float sample of a series, for storage.NewListSeries.
type sample struct {
	t int64
	f float64
}

func (s sample) T() int64                      { return s.t }
func (s sample) ST() int64                     { return 0 }
func (s sample) F() float64                    { return s.f }
func (s sample) H() *histogram.Histogram       { return nil }
func (s sample) FH() *histogram.FloatHistogram { return nil }
func (s sample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s sample) Copy() chunks.Sample           { return s }

// store keeps every scraped sample in memory: the storage.Queryable the engine reads.
type store struct {
	mu     sync.Mutex
	series map[string]*series // by labels.String()
	names  map[string]bool    // every metric name scraped
	labels map[string]bool    // every label name a sample had
}

type series struct {
	lset    labels.Labels
	samples []chunks.Sample
}

func newStore() *store {
	return &store{series: map[string]*series{}, names: map[string]bool{}, labels: map[string]bool{}}
}

func (s *store) add(lset labels.Labels, t time.Time, v float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := lset.String()
	sr := s.series[k]
	if sr == nil {
		sr = &series{lset: lset}
		s.series[k] = sr
	}
	sr.samples = append(sr.samples, sample{t: timestamp.FromTime(t), f: v})
	s.names[lset.Get(model.MetricNameLabel)] = true
	lset.Range(func(l labels.Label) { s.labels[l.Name] = true })
}

// Querier is the storage.Queryable the engine queries.
func (s *store) Querier(int64, int64) (storage.Querier, error) {
	return &storage.MockQuerier{SelectMockFunction: s.selectSeries}, nil
}

func (s *store) selectSeries(_ bool, _ *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []storage.Series
	for _, sr := range s.series {
		if matchesAll(sr.lset, ms) {
			out = append(out, storage.NewListSeries(sr.lset, slices.Clone(sr.samples)))
		}
	}
	slices.SortFunc(out, func(a, b storage.Series) int { return labels.Compare(a.Labels(), b.Labels()) })
	return &seriesSet{list: out, i: -1}
}

func matchesAll(l labels.Labels, ms []*labels.Matcher) bool {
	for _, m := range ms {
		if !m.Matches(l.Get(m.Name)) {
			return false
		}
	}
	return true
}

type seriesSet struct {
	list []storage.Series
	i    int
}

func (s *seriesSet) Next() bool                        { s.i++; return s.i < len(s.list) }
func (s *seriesSet) At() storage.Series                { return s.list[s.i] }
func (s *seriesSet) Err() error                        { return nil }
func (s *seriesSet) Warnings() annotations.Annotations { return nil }

// scrape reads tg's /metrics as Prometheus does (its own text parser) and stores each sample at
// ts, with the target's labels.
func (s *store) scrape(ctx context.Context, tg target, ts time.Time) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, tg.url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4;q=1,*/*;q=0.1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", tg.url, resp.Status)
	}
	p, err := textparse.New(body, resp.Header.Get("Content-Type"), nil, textparse.ParserOptions{})
	if p == nil {
		return fmt.Errorf("%s: %w", tg.url, err)
	}
	for {
		entry, err := p.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", tg.url, err)
		}
		if entry != textparse.EntrySeries {
			continue
		}
		_, _, v := p.Series()
		var scraped labels.Labels
		p.Labels(&scraped)
		b := labels.NewBuilder(scraped)
		tg.labels.Range(func(l labels.Label) {
			if !scraped.Has(l.Name) { // honorLabels: the scraped label wins
				b.Set(l.Name, l.Value)
			}
		})
		s.add(b.Labels(), ts, v)
	}
}

// rule is an alerting rule of alerts.yaml, and the alerts it has active.
type rule struct {
	rulefmt.Rule
	active map[string]*alert
}

type alert struct {
	labels   labels.Labels
	activeAt time.Time
	value    float64
	firing   bool
}

// loadRules reads the rule file in the PrometheusRule at path, validated as Prometheus loads a
// rule file (the expressions parse, the templates parse, names are valid).
func loadRules(t *testing.T, path string) []*rule {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var pr struct {
		APIVersion string         `json:"apiVersion"`
		Kind       string         `json:"kind"`
		Metadata   map[string]any `json:"metadata"`
		Spec       map[string]any `json:"spec"`
	}
	require.NoError(t, yaml.UnmarshalStrict(b, &pr))
	require.Equal(t, "monitoring.coreos.com/v1", pr.APIVersion)
	require.Equal(t, "PrometheusRule", pr.Kind)
	spec, err := yaml.Marshal(pr.Spec)
	require.NoError(t, err)
	groups, errs := rulefmt.Parse(spec, false, model.LegacyValidation, parser.NewParser(parser.Options{}), nil)
	require.Empty(t, errs, "the rule file, as Prometheus reads it")
	var out []*rule
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			require.NotEmpty(t, r.Alert, "alerts only: %s", r.Expr)
			out = append(out, &rule{Rule: r, active: map[string]*alert{}})
		}
	}
	return out
}

// eval evaluates r at ts as Prometheus's rule manager does: each series the expression returns
// is an alert, labelled with its labels (less the metric name), the rule's and alertname;
// pending from the first evaluation that returns it, firing once it has been returned for `for`;
// gone (resolved) at the first evaluation that does not return it.
func (r *rule) eval(ctx context.Context, engine *promql.Engine, q storage.Queryable, ts time.Time) error {
	vec, err := query(ctx, engine, q, r.Expr, ts)
	if err != nil {
		return fmt.Errorf("%s: %w", r.Alert, err)
	}
	seen := map[string]bool{}
	for _, s := range vec {
		b := labels.NewBuilder(s.Metric).Del(model.MetricNameLabel)
		for k, v := range r.Labels {
			b.Set(k, v)
		}
		b.Set(labels.AlertName, r.Alert)
		l := b.Labels()
		k := l.String()
		a := r.active[k]
		if a == nil {
			a = &alert{labels: l, activeAt: ts}
			r.active[k] = a
		}
		a.value = s.F
		a.firing = ts.Sub(a.activeAt) >= time.Duration(r.For)
		seen[k] = true
	}
	for k := range r.active {
		if !seen[k] {
			delete(r.active, k)
		}
	}
	return nil
}

// firing returns r's firing alerts.
func (r *rule) firing() []*alert {
	var out []*alert
	for _, a := range r.active {
		if a.firing {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(a, b *alert) int { return labels.Compare(a.labels, b.labels) })
	return out
}

// expand expands r's annotations for a as Prometheus does before it sends the alert, every
// label they name required.
func (r *rule) expand(ctx context.Context, a *alert, ts time.Time) (map[string]string, error) {
	data := template.AlertTemplateData(a.labels.Map(), nil, "", promql.Sample{Metric: a.labels, F: a.value})
	defs := "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}"
	out := map[string]string{}
	for k, text := range r.Annotations {
		e := template.NewTemplateExpander(ctx, defs+text, "__alert_"+r.Alert, data, model.Time(timestamp.FromTime(ts)),
			nil, &url.URL{}, []string{"missingkey=error"})
		s, err := e.Expand()
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", r.Alert, k, err)
		}
		out[k] = s
	}
	return out, nil
}

// query runs an instant query.
func query(ctx context.Context, engine *promql.Engine, q storage.Queryable, expr string, ts time.Time) (promql.Vector, error) {
	qry, err := engine.NewInstantQuery(ctx, q, nil, expr, ts)
	if err != nil {
		return nil, err
	}
	defer qry.Close()
	res := qry.Exec(ctx)
	if res.Err != nil {
		return nil, res.Err
	}
	if w, _ := res.Warnings.AsStrings(expr, 0, 0); len(w) > 0 {
		return nil, fmt.Errorf("%s: %s", expr, strings.Join(w, "; "))
	}
	return res.Vector()
}

// references returns the metric names expr selects and the label names it matches or groups
// by.
func references(t *testing.T, expr string) (metrics, labelNames []string) {
	t.Helper()
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	require.NoError(t, err, expr)
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			for _, m := range n.LabelMatchers {
				if m.Name == model.MetricNameLabel {
					metrics = append(metrics, m.Value)
				} else {
					labelNames = append(labelNames, m.Name)
				}
			}
		case *parser.AggregateExpr:
			labelNames = append(labelNames, n.Grouping...)
		case *parser.BinaryExpr:
			if n.VectorMatching != nil {
				labelNames = append(labelNames, n.VectorMatching.MatchingLabels...)
				labelNames = append(labelNames, n.VectorMatching.Include...)
			}
		}
		return nil
	})
	return metrics, labelNames
}
