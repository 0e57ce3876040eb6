package main

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/tracing"
	"github.com/troupe-dev/troupe/events/tracing/otlptest"
)

// startTracedDev runs `troupe dev` in process, as startDev does, with args added; stop stops it
// (and so exports the spans its services did not export yet) and waits until it returned.
func startTracedDev(t *testing.T, args ...string) (server string, stop func()) {
	t.Helper()
	server, _, stop = launchDev(t, args...)
	return server, stop
}

// spanTree is the spans of one trace, by id.
type spanTree struct {
	spans map[string]otlptest.Span
}

func traceOf(all []otlptest.Span, traceID string) spanTree {
	tr := spanTree{spans: map[string]otlptest.Span{}}
	for _, s := range all {
		if s.TraceID() == traceID {
			tr.spans[s.ID()] = s
		}
	}
	return tr
}

// named returns the trace's spans named name.
func (tr spanTree) named(name string) []otlptest.Span {
	var out []otlptest.Span
	for _, s := range tr.spans {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

// one returns the trace's one span named name, failing the test if there is not exactly one.
func (tr spanTree) one(t *testing.T, name string) otlptest.Span {
	t.Helper()
	s := tr.named(name)
	require.Len(t, s, 1, "spans named %q", name)
	return s[0]
}

// root follows s's parents within the trace and returns the span with none.
func (tr spanTree) root(t *testing.T, s otlptest.Span) otlptest.Span {
	t.Helper()
	for range len(tr.spans) + 1 {
		if s.ParentID() == "" {
			return s
		}
		p, ok := tr.spans[s.ParentID()]
		require.True(t, ok, "span %q (%s): its parent %s is not in the trace", s.Name, s.Service, s.ParentID())
		s = p
	}
	t.Fatalf("span %q: a cycle of parents", s.Name)
	return s
}

// TestOneTracePerRevision: with --otlp-endpoint on `troupe dev` and on `troupe release`, each
// revision is one trace at an OTLP receiver: the CLI's request is its root, and every span of
// it — the renderer's, the applier's and its stages', health's, history's — descends from that
// root; the services' work is in the order of the flow; another revision is another trace.
func TestOneTracePerRevision(t *testing.T) {
	for _, k := range []string{tracing.EnvEndpoint, tracing.EnvTracesEndpoint, tracing.EnvProtocol, tracing.EnvTracesProtocol} {
		t.Setenv(k, "")
	}
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "200") // ms: the batches leave soon, not every 5 s
	recv := otlptest.HTTP(t)
	server, stopDev := startTracedDev(t, "--otlp-endpoint", recv.Endpoint)
	ns := testKube.Namespace(t)

	// A ConfigMap, and ConfigMap hooks before and after it: stages of every kind, nothing slow.
	chart := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(chart, "templates"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(chart, "Chart.yaml"), []byte("apiVersion: v2\nname: traced\nversion: 0.1.0\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(chart, "values.yaml"), []byte("greeting: hello\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(chart, "templates", "objects.yaml"), []byte(`apiVersion: v1
kind: ConfigMap
metadata:
  name: traced
data:
  greeting: {{ .Values.greeting | quote }}
{{- range $phase := list "pre" "post" }}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: traced-{{ $phase }}
  annotations:
    "helm.sh/hook": {{ $phase }}-install,{{ $phase }}-upgrade
data:
  revision: "{{ $.Release.Revision }}"
{{- end }}
`), 0o644))

	code, out, errOut := troupe(t, server, "", "release", "traced", chart, "-n", ns, "--wait", "--otlp-endpoint", recv.Endpoint)
	require.Equal(t, 0, code, "%s\n%s", out, errOut)
	code, out, errOut = troupe(t, server, "", "release", "traced", chart, "-n", ns, "--wait", "--set", "greeting=hi", "--otlp-endpoint", recv.Endpoint)
	require.Equal(t, 0, code, "%s\n%s", out, errOut)

	// The CLI exported its span as it exited; the services export theirs in batches. History
	// handles release.ready after the CLI saw it: wait for both revisions' before stopping.
	require.Eventually(t, func() bool {
		return countNamed(recv.Spans(), "history handle release.ready") >= 2
	}, 60*time.Second, 50*time.Millisecond, "history's spans of both revisions' release.ready")
	stopDev() // exports whatever is left

	all := recv.Spans()
	var roots []otlptest.Span
	for _, s := range all {
		if s.Name == "cli request release.requested" {
			roots = append(roots, s)
		}
	}
	require.Len(t, roots, 2, "one root span per `troupe release`")
	require.NotEqual(t, roots[0].TraceID(), roots[1].TraceID(), "each revision a trace of its own")

	for i, root := range roots {
		revision := i + 1
		t.Run("revision "+[]string{"1", "2"}[i], func(t *testing.T) {
			assert.Equal(t, "troupe-cli", root.Service)
			assert.Empty(t, root.ParentID(), "the CLI's span is the root")
			request := root.Attr("cloudevents.event_id")
			require.NotEmpty(t, request)
			tr := traceOf(all, root.TraceID())
			t.Logf("trace %s:\n%s", root.TraceID(), tr.draw(root, ""))

			services := map[string]bool{}
			for _, s := range tr.spans {
				services[s.Service] = true
				assert.Equal(t, root.ID(), tr.root(t, s).ID(), "span %q of %s descends from the CLI's", s.Name, s.Service)
				if c := s.Attr(string(events.AttrCorrelationID)); c != "" {
					assert.Equal(t, request, c, "span %q of %s is of this revision's flow", s.Name, s.Service)
				}
			}
			for _, svc := range []string{"troupe-cli", "troupe-renderer", "troupe-applier", "troupe-health", "troupe-history"} {
				assert.True(t, services[svc], "the trace holds spans of %s: %v", svc, services)
			}
			// No span of this revision's flow in another trace.
			for _, s := range all {
				if s.Attr(string(events.AttrCorrelationID)) == request {
					assert.Equal(t, root.TraceID(), s.TraceID(), "span %q of %s", s.Name, s.Service)
				}
			}

			rendered := tr.one(t, "renderer handle release.requested")
			assert.Equal(t, "troupe-renderer", rendered.Service)
			assert.Equal(t, root.ID(), rendered.ParentID(), "the renderer's span is the request's child")
			assert.Equal(t, []string{"1", "2"}[i], rendered.Attr(string(events.AttrRevision)))
			assert.Equal(t, "nats", rendered.Attr("messaging.system"))
			assert.Equal(t, ns, rendered.Attr(string(events.AttrNamespace)))
			assert.Equal(t, "traced", rendered.Attr(string(events.AttrRelease)))
			assert.Equal(t, rendered.ID(), tr.one(t, "render").ParentID(), "the render stage")

			applied := tr.one(t, "applier handle release.rendered")
			assert.Equal(t, rendered.ID(), applied.ParentID(), "the applier's span is the renderer's child")
			pre, post := "apply hooks pre-install", "apply hooks post-install"
			if revision == 2 {
				pre, post = "apply hooks pre-upgrade", "apply hooks post-upgrade"
			}
			for _, stage := range []string{"apply fetch bundle", "apply validate", "apply crds and namespaces", pre, "apply cluster-scoped", "apply namespaced", "apply prune"} {
				assert.Equal(t, applied.ID(), tr.one(t, stage).ParentID(), "stage %q is a child of the applier's span", stage)
			}
			settled := tr.one(t, "applier handle release.settled")
			assert.Equal(t, settled.ID(), tr.one(t, post).ParentID(), "the post hooks, once health said settled")

			ready := tr.one(t, "health publish release.ready")
			assert.Equal(t, "troupe-health", ready.Service)
			assert.NotEmpty(t, tr.named("health handle release.applied"))
			assert.NotEmpty(t, tr.named("history handle release.ready"))
			assert.NotEmpty(t, tr.named("history handle release.requested"))

			// In the flow's order.
			assert.Less(t, root.GetStartTimeUnixNano(), rendered.GetStartTimeUnixNano())
			assert.Less(t, rendered.GetStartTimeUnixNano(), applied.GetStartTimeUnixNano())
			assert.Less(t, applied.GetStartTimeUnixNano(), ready.GetStartTimeUnixNano())
		})
	}
}

// draw draws s and its descendants, one a line, children in the order they started.
func (tr spanTree) draw(s otlptest.Span, indent string) string {
	var children []otlptest.Span
	for _, c := range tr.spans {
		if c.ParentID() == s.ID() {
			children = append(children, c)
		}
	}
	slices.SortFunc(children, func(a, b otlptest.Span) int { return cmp.Compare(a.GetStartTimeUnixNano(), b.GetStartTimeUnixNano()) })
	took := time.Duration(s.GetEndTimeUnixNano() - s.GetStartTimeUnixNano())
	out := fmt.Sprintf("%s%-*s %-16s %8s\n", indent, 50-len(indent), s.Name, s.Service, took.Round(100*time.Microsecond))
	for _, c := range children {
		out += tr.draw(c, indent+"  ")
	}
	return out
}

func countNamed(spans []otlptest.Span, name string) int {
	n := 0
	for _, s := range spans {
		if s.Name == name {
			n++
		}
	}
	return n
}
