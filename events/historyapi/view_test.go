package historyapi_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/historyapi"
)

func TestDescribeSource(t *testing.T) {
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tests := []struct {
		source events.Source
		want   string
	}{
		{events.Source{Helm: &events.HelmSource{Path: "./chart"}}, "helm ./chart"},
		{events.Source{Helm: &events.HelmSource{Object: digest}}, "helm upload " + digest},
		{events.Source{Helm: &events.HelmSource{OCI: "oci://ghcr.io/x/podinfo", Version: "6.1.0"}}, "helm oci://ghcr.io/x/podinfo 6.1.0"},
		{events.Source{Helm: &events.HelmSource{RepoURL: "https://charts.example.com", Chart: "web", Version: "^1"}}, "helm https://charts.example.com web ^1"},
		{events.Source{Kustomize: &events.KustomizeSource{Path: "deploy/dev"}}, "kustomize deploy/dev"},
		{events.Source{Kustomize: &events.KustomizeSource{Object: digest, Dir: "overlays/dev"}}, "kustomize upload " + digest},
		{events.Source{Manifests: &events.ManifestsSource{Path: "deploy/"}}, "manifests deploy/"},
		{events.Source{Manifests: &events.ManifestsSource{Object: digest}}, "manifests upload " + digest},
		{events.Source{Manifests: &events.ManifestsSource{YAML: "kind: ConfigMap"}}, "manifests inline"},
		{events.Source{}, "unknown"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			assert.Equal(t, tc.want, historyapi.DescribeSource(tc.source))
		})
	}
}

// TestViewLookups: Get, Latest and Entry find what a view holds, and nil for what it does not.
func TestViewLookups(t *testing.T) {
	v := &historyapi.View{}
	assert.Nil(t, v.Latest())
	assert.Nil(t, v.Get(1))
	assert.Nil(t, v.Entry("x"))
	v.Revisions = []*historyapi.Revision{{Revision: 1, State: historyapi.StateReady}, {Revision: 2, State: historyapi.StateFailed}}
	v.Timeline = []historyapi.Entry{{ID: "a", Revision: 1}, {ID: "b", Revision: 2}}
	assert.Equal(t, 2, v.Latest().Revision)
	assert.Equal(t, historyapi.StateReady, v.Get(1).State)
	assert.Nil(t, v.Get(3))
	v.Entry("b").Note = "noted"
	assert.Equal(t, "noted", v.Timeline[1].Note, "Entry points into the timeline")
}
