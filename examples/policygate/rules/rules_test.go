package rules_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/examples/policygate/rules"
)

// loadBundle reads the YAML documents of path (testdata/…) into the bundle the renderer would
// store for release rel, as the gate reads it back: objects with a helm.sh/hook annotation are
// its hooks (test hooks dropped, as the renderer drops them), the rest its objects; JSON, so
// numbers and nulls are what the gate sees.
func loadBundle(t *testing.T, rel events.Release, path string) *events.Bundle {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", path))
	require.NoError(t, err)
	b := events.Bundle{APIVersion: events.BundleAPIVersion, Kind: events.BundleKind, Release: rel.String()}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	for {
		var obj map[string]any
		err := dec.Decode(&obj)
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err, path)
		if obj == nil {
			continue // an empty document
		}
		hook, _ := annotations(obj)["helm.sh/hook"].(string)
		switch {
		case hook == "":
			b.Objects = append(b.Objects, obj)
		case !slices.ContainsFunc(strings.Split(hook, ","), func(h string) bool { return strings.HasPrefix(strings.TrimSpace(h), "test") }):
			b.Hooks = append(b.Hooks, events.BundleHook{Events: strings.Split(hook, ","), Object: obj})
		}
	}
	data, err := json.Marshal(b)
	require.NoError(t, err)
	out, err := events.ReadBundle(data)
	require.NoError(t, err)
	return out
}

func annotations(obj map[string]any) map[string]any {
	md, _ := obj["metadata"].(map[string]any)
	a, _ := md["annotations"].(map[string]any)
	return a
}

// found is a finding as a test names it: "<rule> <Kind>/<namespace>/<name>: <message>".
func found(fs []events.Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, fmt.Sprintf("%s %s: %s", f.Rule, f.Object, f.Message))
	}
	return out
}

var demo = events.Release{Namespace: "demo", Name: "app"}

const (
	d1 = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	d2 = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

// TestRules: each rule, on a fixture that breaks it and one that keeps it, under the configs
// that change what it finds. Only the rule's own findings are compared: a fixture is about one
// rule.
func TestRules(t *testing.T) {
	digest := rules.Config{RequireDigest: true}
	for _, tc := range []struct {
		name    string
		fixture string
		rule    string
		cfg     rules.Config
		want    []string
	}{
		{name: "digests pass, digest required", fixture: "rules/image-digest-pass.yaml", rule: rules.RuleImageDigest, cfg: digest},
		{name: "digests pass, latest refused", fixture: "rules/image-digest-pass.yaml", rule: rules.RuleImageDigest},
		{name: "digest required", fixture: "rules/image-digest-fail.yaml", rule: rules.RuleImageDigest, cfg: digest, want: []string{
			`image-digest Deployment/demo/web: container "web": image "ghcr.io/example/web:1.4.2" is not pinned by a digest (@sha256:…)`,
			`image-digest StatefulSet/demo/db: init container "init": image "busybox" is not pinned by a digest (@sha256:…), and runs whatever latest is`,
			`image-digest StatefulSet/demo/db: container "db": image "registry.example.com:5000/postgres:latest" is not pinned by a digest (@sha256:…), and runs whatever latest is`,
			`image-digest DaemonSet/demo/agent: container "agent": image "example/agent@sha512:abcdef" has digest "sha512:abcdef", not a sha256 digest`,
			`image-digest Pod/demo/debug: ephemeral container "shell": image "registry.example.com:5000/toolbox" is not pinned by a digest (@sha256:…), and runs whatever latest is`,
			`image-digest ReplicaSet/demo/blank: container "blank" has no image`,
			`image-digest Job/demo/setup: hook: container "setup": image "alpine:3.20" is not pinned by a digest (@sha256:…)`,
		}},
		{name: "latest refused", fixture: "rules/image-digest-fail.yaml", rule: rules.RuleImageDigest, want: []string{
			`image-digest StatefulSet/demo/db: init container "init": image "busybox" has no tag, which means latest: tag it with a version or pin it by digest`,
			`image-digest StatefulSet/demo/db: container "db": image "registry.example.com:5000/postgres:latest" uses the tag latest: tag it with a version or pin it by digest`,
			`image-digest DaemonSet/demo/agent: container "agent": image "example/agent@sha512:abcdef" has digest "sha512:abcdef", not a sha256 digest`,
			`image-digest Pod/demo/debug: ephemeral container "shell": image "registry.example.com:5000/toolbox" has no tag, which means latest: tag it with a version or pin it by digest`,
			`image-digest ReplicaSet/demo/blank: container "blank" has no image`,
		}},
		{name: "limits pass", fixture: "rules/resource-limits-pass.yaml", rule: rules.RuleResourceLimits},
		{name: "limits missing", fixture: "rules/resource-limits-fail.yaml", rule: rules.RuleResourceLimits, want: []string{
			`resource-limits Deployment/demo/web: init container "migrate" has no resources.limits.cpu`,
			`resource-limits Deployment/demo/web: container "web" has no resources.limits.cpu nor resources.limits.memory`,
			`resource-limits CronJob/demo/report: container "report" has no resources.limits.memory`,
			`resource-limits Job/demo/batch: container "a" has no resources.limits.memory`,
			`resource-limits Pod/demo/check: hook: container "check" has no resources.limits.cpu nor resources.limits.memory`,
		}},
		{name: "load balancers allowed", fixture: "rules/no-loadbalancer.yaml", rule: rules.RuleNoLoadBalancer},
		{name: "load balancers forbidden elsewhere", fixture: "rules/no-loadbalancer.yaml", rule: rules.RuleNoLoadBalancer,
			cfg: rules.Config{ForbidLoadBalancerIn: []string{"prod", "staging"}}},
		{name: "load balancers forbidden in the release's namespace", fixture: "rules/no-loadbalancer.yaml", rule: rules.RuleNoLoadBalancer,
			cfg: rules.Config{ForbidLoadBalancerIn: []string{"demo"}}, want: []string{
				`no-loadbalancer Service/demo/public: Service "public" is of type LoadBalancer, which namespace "demo" forbids: expose it through an Ingress or a Gateway, or as a ClusterIP or NodePort Service`,
			}},
		{name: "load balancers forbidden in the object's namespace", fixture: "rules/no-loadbalancer.yaml", rule: rules.RuleNoLoadBalancer,
			cfg: rules.Config{ForbidLoadBalancerIn: []string{"edge"}}, want: []string{
				`no-loadbalancer Service/edge/edge: Service "edge" is of type LoadBalancer, which namespace "edge" forbids: expose it through an Ingress or a Gateway, or as a ClusterIP or NodePort Service`,
			}},
		{name: "load balancers forbidden everywhere", fixture: "rules/no-loadbalancer.yaml", rule: rules.RuleNoLoadBalancer,
			cfg: rules.Config{ForbidLoadBalancerIn: []string{rules.AllNamespaces}}, want: []string{
				`no-loadbalancer Service/demo/public: Service "public" is of type LoadBalancer, which namespace "demo" forbids: expose it through an Ingress or a Gateway, or as a ClusterIP or NodePort Service`,
				`no-loadbalancer Service/edge/edge: Service "edge" is of type LoadBalancer, which namespace "edge" forbids: expose it through an Ingress or a Gateway, or as a ClusterIP or NodePort Service`,
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := rules.Check(loadBundle(t, demo, tc.fixture), demo, tc.cfg)
			got = slices.DeleteFunc(got, func(f events.Finding) bool { return f.Rule != tc.rule })
			assert.Equal(t, tc.want, found(got))
			assertValid(t, got)
		})
	}
}

// assertValid checks that findings make a valid release.rejected: what the gate publishes.
func assertValid(t *testing.T, fs []events.Finding) {
	t.Helper()
	if len(fs) == 0 {
		return
	}
	v := events.Rejected{Gate: "policy", Revision: 1, Bundle: d1, Message: "x", Findings: fs}
	assert.NoError(t, v.Validate())
}

// finding is what TestCharts expects of one finding: its rule and object.
type finding struct {
	rule, object string
}

// unpinnedUnlimited are the findings of a container of object with an unpinned image and no
// limits.
func unpinnedUnlimited(object string) []finding {
	return []finding{{rules.RuleImageDigest, object}, {rules.RuleResourceLimits, object}}
}

// TestCharts: the rules over real charts (testdata/charts, rendered from ../shared/fixtures by
// generate.sh): findings name the objects and containers a person would fix, in the bundle's
// order, hooks last; a chart whose images are pinned and limited passes.
func TestCharts(t *testing.T) {
	strict := rules.Config{RequireDigest: true, ForbidLoadBalancerIn: []string{rules.AllNamespaces}}
	soft := rules.Config{ForbidLoadBalancerIn: []string{"prod"}}
	limits := func(object string) []finding { return []finding{{rules.RuleResourceLimits, object}} }
	for _, tc := range []struct {
		name, chart string
		rel         events.Release
		cfg         rules.Config
		want        [][]finding
		// messages are findings' messages that must be there (a sample).
		messages []string
	}{
		{name: "podinfo", chart: "podinfo.yaml", rel: events.Release{Namespace: "demo", Name: "podinfo"}, cfg: strict,
			want: [][]finding{unpinnedUnlimited("Deployment/demo/podinfo")},
			messages: []string{
				`container "podinfo": image "ghcr.io/stefanprodan/podinfo:6.14.1" is not pinned by a digest (@sha256:…)`,
				`container "podinfo" has no resources.limits.cpu nor resources.limits.memory`,
			}},
		{name: "podinfo, tags allowed", chart: "podinfo.yaml", rel: events.Release{Namespace: "demo", Name: "podinfo"}, cfg: soft,
			want: [][]finding{limits("Deployment/demo/podinfo")}},
		{name: "podinfo pinned and limited", chart: "podinfo-pinned.yaml", rel: events.Release{Namespace: "demo", Name: "podinfo"}, cfg: strict},
		{name: "postgresql", chart: "postgresql.yaml", rel: events.Release{Namespace: "data", Name: "db"}, cfg: strict},
		{name: "postgresql's load balancer", chart: "postgresql-loadbalancer.yaml", rel: events.Release{Namespace: "data", Name: "db"}, cfg: strict,
			want:     [][]finding{{{rules.RuleNoLoadBalancer, "Service/data/db-postgresql"}}},
			messages: []string{`Service "db-postgresql" is of type LoadBalancer, which namespace "data" forbids: expose it through an Ingress or a Gateway, or as a ClusterIP or NodePort Service`}},
		{name: "postgresql's load balancer elsewhere", chart: "postgresql-loadbalancer.yaml", rel: events.Release{Namespace: "data", Name: "db"}, cfg: soft},
		{name: "nats", chart: "nats.yaml", rel: events.Release{Namespace: "messaging", Name: "nats"}, cfg: strict,
			want: [][]finding{
				unpinnedUnlimited("Deployment/messaging/nats-box"),
				unpinnedUnlimited("StatefulSet/messaging/nats"), unpinnedUnlimited("StatefulSet/messaging/nats"), // nats, reloader
			},
			messages: []string{`container "reloader": image "natsio/nats-server-config-reloader:0.23.0" is not pinned by a digest (@sha256:…)`}},
		{name: "nats, tags allowed", chart: "nats.yaml", rel: events.Release{Namespace: "messaging", Name: "nats"}, cfg: soft,
			want: [][]finding{limits("Deployment/messaging/nats-box"), limits("StatefulSet/messaging/nats"), limits("StatefulSet/messaging/nats")}},
		{name: "argo-cd, its pre-install hook too", chart: "argo-cd.yaml", rel: events.Release{Namespace: "argocd", Name: "argocd"}, cfg: strict,
			want: [][]finding{
				unpinnedUnlimited("Deployment/argocd/argocd-applicationset-controller"),
				unpinnedUnlimited("Deployment/argocd/argocd-notifications-controller"),
				unpinnedUnlimited("Deployment/argocd/argocd-repo-server"), unpinnedUnlimited("Deployment/argocd/argocd-repo-server"), // copyutil, repo-server
				unpinnedUnlimited("Deployment/argocd/argocd-server"),
				unpinnedUnlimited("Deployment/argocd/argocd-dex-server"), unpinnedUnlimited("Deployment/argocd/argocd-dex-server"), // copyutil, dex-server
				unpinnedUnlimited("Deployment/argocd/argocd-redis"),
				unpinnedUnlimited("StatefulSet/argocd/argocd-application-controller"),
				unpinnedUnlimited("Job/argocd/argocd-redis-secret-init"), // the hook
			},
			messages: []string{
				`init container "copyutil": image "quay.io/argoproj/argocd:v3.4.4" is not pinned by a digest (@sha256:…)`,
				`container "redis": image "ecr-public.aws.com/docker/library/redis:8.2.3-alpine" is not pinned by a digest (@sha256:…)`,
				`hook: container "secret-init": image "quay.io/argoproj/argocd:v3.4.4" is not pinned by a digest (@sha256:…)`,
				`hook: container "secret-init" has no resources.limits.cpu nor resources.limits.memory`,
			}},
		{name: "argo-cd, tags allowed", chart: "argo-cd.yaml", rel: events.Release{Namespace: "argocd", Name: "argocd"}, cfg: soft,
			want: [][]finding{
				limits("Deployment/argocd/argocd-applicationset-controller"),
				limits("Deployment/argocd/argocd-notifications-controller"),
				limits("Deployment/argocd/argocd-repo-server"), limits("Deployment/argocd/argocd-repo-server"),
				limits("Deployment/argocd/argocd-server"),
				limits("Deployment/argocd/argocd-dex-server"), limits("Deployment/argocd/argocd-dex-server"),
				limits("Deployment/argocd/argocd-redis"),
				limits("StatefulSet/argocd/argocd-application-controller"),
				limits("Job/argocd/argocd-redis-secret-init"),
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := rules.Check(loadBundle(t, tc.rel, "charts/"+tc.chart), tc.rel, tc.cfg)
			assertValid(t, got)
			var have []finding
			for _, f := range got {
				require.NotNil(t, f.Object, "a finding names its object")
				have = append(have, finding{f.Rule, f.Object.String()})
			}
			assert.Equal(t, slices.Concat(tc.want...), have)
			var msgs []string
			for _, f := range got {
				msgs = append(msgs, f.Message)
			}
			for _, m := range tc.messages {
				assert.Contains(t, msgs, m)
			}
		})
	}
}
