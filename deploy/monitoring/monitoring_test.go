package monitoring_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/natstest"
	"github.com/troupe-dev/troupe/events/serve"
	"github.com/troupe-dev/troupe/services/history"
	"github.com/troupe-dev/troupe/services/renderer"
)

// step is the simulated clock's scrape and rule evaluation interval.
const step = time.Minute

// A dashboard's variables, as Grafana substitutes them: every namespace and service, the rate
// interval Grafana picks for a one-minute scrape interval.
var grafanaVars = strings.NewReplacer("$__rate_interval", "4m", "$__interval", "1m", "$__range", "1h",
	"$namespace", ".*", "$service", ".*")

// TestAlertsOnRealServices runs troupe services as their processes do, makes each fault the
// alerts are for real, and evaluates alerts.yaml on what their /metrics said, minute by
// simulated minute: nothing fires while all is well, each alert fires for its fault (after its
// `for`), and resolves once the fault is gone. The dashboard's panels show the faults, and the
// rules and the dashboard name only what the services expose.
func TestAlertsOnRealServices(t *testing.T) {
	e := newEnv(t)

	// The real renderer, on the live subjects: it refuses a path source (no --source-root), and
	// dead-letters the request.
	live := e.service("renderer", "", func(ctx context.Context, env *serve.Env) (serve.Service, error) {
		return renderer.New(ctx, env.JS, renderer.Options{Names: env.Names, Logger: env.Log, Metrics: env.Metrics})
	})
	// In sandbox "stalled": a subscriber whose handler hangs (on all but warm-up requests) until
	// release is closed, and history, whose deadline watchdog ends the revisions it holds.
	release := make(chan struct{})
	stalled := e.service("stuck", "stalled", func(ctx context.Context, env *serve.Env) (serve.Service, error) {
		return events.NewSubscriber(env.JS, events.SubscriberConfig{Service: "stuck", Names: env.Names,
			Types: []string{events.TypeRequested}, Concurrency: 1, DrainTimeout: time.Second, Logger: env.Log, Metrics: env.Metrics},
			func(ctx context.Context, ev event.Event) error {
				if ev.Subject() == "apps/warmup" {
					return nil
				}
				select {
				case <-release:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
	})
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) }) // before the services stop
	e.service("history", "stalled", func(ctx context.Context, env *serve.Env) (serve.Service, error) {
		return history.New(ctx, env.JS, history.Options{Grace: 200 * time.Millisecond, Names: env.Names, Logger: env.Log, Metrics: env.Metrics})
	})
	// In sandbox "flaky": a subscriber whose handler fails on apps/broken while broken is set:
	// retried every 20ms, never given up on.
	var broken atomic.Bool
	flaky := e.service("flaky", "flaky", func(ctx context.Context, env *serve.Env) (serve.Service, error) {
		return events.NewSubscriber(env.JS, events.SubscriberConfig{Service: "flaky", Names: env.Names,
			Types: []string{events.TypeRequested}, MaxDeliver: 1 << 20, Backoff: []time.Duration{20 * time.Millisecond},
			Logger: env.Log, Metrics: env.Metrics},
			func(ctx context.Context, ev event.Event) error {
				if ev.Subject() == "apps/broken" && broken.Load() {
					return errors.New("the API server answers 503")
				}
				return nil
			})
	})
	// Traffic every minute: the stuck service's warm-ups, the flaky service's good requests.
	traffic := func() {
		stalled.request("warmup", time.Hour)
		flaky.request("fine", time.Hour)
	}

	t.Run("healthy: nothing fires", func(t *testing.T) {
		fired := e.run(t, 20, traffic)
		assert.Empty(t, fired)
	})

	var faultsStart, faultsEnd time.Time
	t.Run("faults: every alert fires", func(t *testing.T) {
		live.request("refused", time.Hour)   // the renderer refuses it: a dead letter
		stalled.request("late", time.Second) // held by the stuck handler past its deadline
		for range 120 {                      // held behind it: a backlog
			stalled.request("waiting", time.Hour)
		}
		broken.Store(true)
		flaky.request("broken", time.Hour) // failing, retried
		e.await(t, "the faults in /metrics", `
			  sum(troupe_events_dead_lettered_total{service="renderer"}) > 0
			and sum(troupe_flows_deadline_exceeded_total) > 0
			and max(troupe_consumer_pending{service="stuck"}) > 100
			and sum(troupe_events_handled_total{service="flaky", outcome="error"}) > 0`)

		const steps = 22
		faultsStart = e.now
		fired := e.run(t, steps, traffic)
		// What happened fires at the first scrape after it, for as long as the rule's window
		// (10m, 15m) still holds it; what lasts fires after `for` (errors: from the second
		// scrape, which gives the first rate, plus 10m), until the end.
		assert.Equal(t, span(0, 9), fired[`TroupeRevisionDeadlineExceeded{namespace="troupe", severity="warning", stage="render"}`])
		assert.Equal(t, span(0, 14), fired[`TroupeDeadLetters{cause="source_not_allowed", namespace="troupe", service="renderer", severity="warning"}`])
		assert.Equal(t, span(11, steps-1), fired[`TroupeHandlerErrors{namespace="troupe", service="flaky", severity="warning"}`])
		assert.Equal(t, span(15, steps-1), fired[`TroupeConsumerBacklog{namespace="troupe", service="stuck", severity="warning"}`])
		stalledSteps := fired[`TroupeConsumerStalled{namespace="troupe", service="stuck", severity="critical"}`]
		require.NotEmpty(t, stalledSteps, "TroupeConsumerStalled")
		// The stuck service's last run finished before the healthy phase's last scrape (step
		// -1), or on a slow machine just after it: its 5m rate window holds no finished run
		// from step 3 (or 4), then `for` 10m.
		assert.Contains(t, []int{13, 14}, stalledSteps[0], "5m with no run finished, then 10m")
		assert.Equal(t, span(stalledSteps[0], steps-1), stalledSteps)
		assert.Len(t, fired, 5, "no other alert: %v", slices.Collect(maps.Keys(fired)))
		faultsEnd = e.now.Add(-step)

		// What an operator reads.
		for _, r := range e.rules {
			for _, a := range r.firing() {
				text, err := r.expand(t.Context(), a, faultsEnd)
				require.NoError(t, err)
				for k, v := range text {
					assert.NotContains(t, v, "{{", "%s %s", r.Alert, k)
				}
			}
		}
		r := e.rule("TroupeConsumerBacklog")
		require.Len(t, r.firing(), 1)
		text, err := r.expand(t.Context(), r.firing()[0], faultsEnd)
		require.NoError(t, err)
		assert.Regexp(t, `^stuck is 1\d\d events behind\.$`, text["summary"])
	})

	t.Run("recovered: every alert resolves", func(t *testing.T) {
		releaseOnce.Do(func() { close(release) })
		broken.Store(false)
		e.await(t, "the services caught up", `
			  max(troupe_consumer_pending{service="stuck"}) == 0
			and sum(troupe_events_handled_total{service="flaky", outcome="ok"}) > 20`)
		e.run(t, 16, traffic)
		for _, r := range e.rules {
			assert.Empty(t, r.active, "%s resolved", r.Alert)
		}
	})

	t.Run("the rules and the dashboard name what the services expose", func(t *testing.T) {
		var exprs []string
		for _, r := range e.rules {
			exprs = append(exprs, r.Expr)
		}
		exprs = append(exprs, dashboardExprs(t)...)
		for _, expr := range exprs {
			metrics, labelNames := references(t, grafanaVars.Replace(expr))
			require.NotEmpty(t, metrics, expr)
			for _, m := range metrics {
				assert.True(t, e.store.names[m], "%s: no metric %s in the services' /metrics", expr, m)
			}
			for _, l := range labelNames {
				assert.True(t, e.store.labels[l], "%s: no label %s on the services' samples, nor from the scrape", expr, l)
			}
		}
	})

	t.Run("every panel shows the faults", func(t *testing.T) {
		require.False(t, faultsEnd.IsZero())
		// Not only a series: a value above zero at some scrape while the faults lasted (a panel
		// of zeros shows nothing of them).
		for _, p := range dashboardPanels(t) {
			for _, expr := range p.exprs {
				shown := false
				for at := faultsStart; !at.After(faultsEnd) && !shown; at = at.Add(step) {
					v, err := query(t.Context(), e.engine, e.store, grafanaVars.Replace(expr), at)
					require.NoError(t, err, "%s: %s", p.title, expr)
					shown = slices.ContainsFunc(v, func(s promql.Sample) bool { return s.F > 0 })
				}
				assert.True(t, shown, "%s: %s shows nothing above zero while the faults last", p.title, expr)
			}
		}
	})
}

// TestRulesAndDashboardParse: alerts.yaml loads as Prometheus loads a rule file, the dashboard
// is Grafana JSON whose every query parses with every variable substituted.
func TestRulesAndDashboardParse(t *testing.T) {
	rules := loadRules(t, "alerts.yaml")
	var names []string
	for _, r := range rules {
		names = append(names, r.Alert)
		assert.Contains(t, []string{"warning", "critical"}, r.Labels["severity"], r.Alert)
		assert.NotEmpty(t, r.Annotations["summary"], r.Alert)
		assert.NotEmpty(t, r.Annotations["description"], r.Alert)
	}
	assert.Equal(t, []string{"TroupeRevisionDeadlineExceeded", "TroupeDeadLetters", "TroupeHandlerErrors",
		"TroupeConsumerStalled", "TroupeConsumerBacklog"}, names)

	panels := dashboardPanels(t)
	require.NotEmpty(t, panels)
	for _, p := range panels {
		assert.NotEmpty(t, p.exprs, p.title)
		for _, expr := range p.exprs {
			s := grafanaVars.Replace(expr)
			assert.NotContains(t, s, "$", "%s: a variable the dashboard does not define: %s", p.title, expr)
			references(t, s) // parses
		}
	}
	assert.Len(t, dashboardExprs(t), 14, "every panel's queries and the variables'")
}

// TestChartCarriesTheFiles: the chart's copies are these files (`make generate`).
func TestChartCarriesTheFiles(t *testing.T) {
	for _, name := range []string{"alerts.yaml", "grafana-dashboard.json"} {
		want, err := os.ReadFile(name)
		require.NoError(t, err)
		got, err := os.ReadFile(filepath.Join("..", "charts", "troupe", "files", "monitoring", name))
		require.NoError(t, err)
		assert.True(t, bytes.Equal(want, got), "deploy/charts/troupe/files/monitoring/%s is stale: run make generate", name)
	}
}

// span is the steps from to to, both included.
func span(from, to int) []int {
	var out []int
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

// env is an embedded NATS server, the services on it, and the simulated clock they are scraped
// and the rules evaluated on.
type env struct {
	t      *testing.T
	url    string
	js     jetstream.JetStream
	store  *store
	engine *promql.Engine
	rules  []*rule

	targets []target
	now     time.Time // the simulated clock: the next step's time
}

func newEnv(t *testing.T) *env {
	srv, _, js := natstest.Start(t)
	return &env{t: t, url: srv.ClientURL(), js: js, store: newStore(), rules: loadRules(t, "alerts.yaml"),
		engine: promql.NewEngine(promql.EngineOpts{MaxSamples: 1 << 22, Timeout: time.Minute}),
		now:    time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
}

// service runs a troupe service command with New, as its process runs it (serve.Run: flags,
// connection, provisioning of prefix's streams and buckets, the registry, HTTP), until the test
// ends; its /metrics is a scrape target from then on. It returns a client that publishes
// requests in its system.
func (e *env) service(name, prefix string, newService func(context.Context, *serve.Env) (serve.Service, error)) *client {
	t := e.t
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	args := []string{"--server", e.url, "--http-listen", addr, "--log-level", "error"}
	if prefix != "" {
		args = append(args, "--subjects-prefix", prefix)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve.Run(ctx, serve.Command{Name: name, New: newService}, args) }()
	t.Cleanup(func() {
		cancel()
		assert.NoError(t, <-done, name)
	})
	require.Eventually(t, func() bool {
		select {
		case err := <-done:
			done <- err
			return true
		default:
		}
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 30*time.Second, 20*time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("%s stopped: %v", name, err)
	default:
	}
	// What a ServiceMonitor's scrape adds: the pod's namespace and name, the Service's job.
	e.targets = append(e.targets, target{url: "http://" + addr + "/metrics", labels: labels.FromStrings(
		"job", "troupe-"+name, "instance", addr, "namespace", "troupe", "pod", "troupe-"+name+"-5d8f9c7b4-x2x9z")})
	names, err := events.NewNames(prefix)
	require.NoError(t, err)
	return &client{t: t, pub: events.NewPublisher(e.js, names)}
}

// client publishes requests in one system (live or a sandbox).
type client struct {
	t   *testing.T
	pub *events.Publisher
}

// request publishes a release.requested for apps/name.
func (c *client) request(name string, timeout time.Duration) {
	ev, err := events.NewEvent("troupe/cli", events.TypeRequested, events.Release{Namespace: "apps", Name: name}, events.Requested{
		Source: events.Source{Manifests: &events.ManifestsSource{Path: "deploy/"}}, Options: events.Options{Timeout: events.Duration(timeout)}})
	require.NoError(c.t, err)
	_, err = c.pub.Publish(c.t.Context(), ev)
	require.NoError(c.t, err)
}

// run runs n steps of the clock: traffic, then every target scraped and every rule evaluated
// at the step's time, a real pause between (so that counters move between scrapes as they would
// between minutes). It returns, by alert, the steps it was firing at.
func (e *env) run(t *testing.T, n int, traffic func()) map[string][]int {
	fired := map[string][]int{}
	for i := range n {
		traffic()
		time.Sleep(150 * time.Millisecond)
		for _, tg := range e.targets {
			require.NoError(t, e.store.scrape(t.Context(), tg, e.now))
		}
		for _, r := range e.rules {
			require.NoError(t, r.eval(t.Context(), e.engine, e.store, e.now))
			for _, a := range r.firing() {
				k := r.Alert + labels.NewBuilder(a.labels).Del(labels.AlertName).Labels().String()
				fired[k] = append(fired[k], i)
			}
		}
		e.now = e.now.Add(step)
	}
	return fired
}

// rule returns the rule named alert.
func (e *env) rule(alert string) *rule {
	i := slices.IndexFunc(e.rules, func(r *rule) bool { return r.Alert == alert })
	require.GreaterOrEqual(e.t, i, 0, alert)
	return e.rules[i]
}

// await waits until expr, evaluated on a scrape of every target now (kept apart from the
// clock's), returns a sample.
func (e *env) await(t *testing.T, what, expr string) {
	require.Eventually(t, func() bool {
		s := newStore()
		now := time.Now()
		for _, tg := range e.targets {
			require.NoError(t, s.scrape(t.Context(), tg, now))
		}
		v, err := query(t.Context(), e.engine, s, expr, now)
		require.NoError(t, err)
		return len(v) > 0
	}, 30*time.Second, 100*time.Millisecond, what)
}

type panel struct {
	title string
	exprs []string
}

// dashboardPanels reads grafana-dashboard.json: every panel with queries (rows' panels too).
func dashboardPanels(t *testing.T) []panel {
	t.Helper()
	d := readDashboard(t)
	var out []panel
	var walk func(ps []dashboardPanel)
	walk = func(ps []dashboardPanel) {
		for _, p := range ps {
			if p.Type != "row" {
				assert.Equal(t, "${datasource}", p.Datasource.UID, "%s: the data source variable", p.Title)
				var exprs []string
				for _, tg := range p.Targets {
					exprs = append(exprs, tg.Expr)
				}
				out = append(out, panel{title: p.Title, exprs: exprs})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// dashboardExprs returns every query of the dashboard: its panels', and the metric selectors of
// its variables' label_values queries.
func dashboardExprs(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, p := range dashboardPanels(t) {
		out = append(out, p.exprs...)
	}
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*([a-zA-Z_]\w*)\)$`)
	for _, v := range readDashboard(t).Templating.List {
		if v.Type != "query" {
			continue
		}
		m := labelValues.FindStringSubmatch(v.query(t))
		require.NotNil(t, m, "variable %s: a label_values query", v.Name)
		out = append(out, fmt.Sprintf("group by (%s) (%s)", m[2], m[1]))
	}
	return out
}

type dashboardPanel struct {
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []dashboardPanel `json:"panels"`
}

type dashboard struct {
	UID        string           `json:"uid"`
	Title      string           `json:"title"`
	Panels     []dashboardPanel `json:"panels"`
	Templating struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

type variable struct {
	Name string `json:"name"`
	Type string `json:"type"`
	// Query is a string for a data source variable, {"query": "…"} for a query variable.
	Query json.RawMessage `json:"query"`
}

// query is a query variable's query.
func (v variable) query(t *testing.T) string {
	t.Helper()
	var q struct {
		Query string `json:"query"`
	}
	require.NoError(t, json.Unmarshal(v.Query, &q), "variable %s", v.Name)
	return q.Query
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile("grafana-dashboard.json")
	require.NoError(t, err)
	var d dashboard
	require.NoError(t, json.Unmarshal(b, &d), "grafana-dashboard.json")
	require.Equal(t, "troupe", d.UID)
	return d
}
