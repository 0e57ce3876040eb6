package apply

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/troupe-dev/troupe/events"
)

// TestMarkLead: which object, if any, is applied first with no dry run of its own — the largest
// of the first stage to be applied; none when a pre-phase hook runs before the stage, and never
// one whose fields are handed over first or whose kind waits for the bundle's CRDs.
func TestMarkLead(t *testing.T) {
	obj := func(kind, name string, size int) *item {
		return &item{ref: events.ObjectRef{Kind: kind, Name: name}, body: []byte(strings.Repeat("x", size))}
	}
	crd, ns := obj("CustomResourceDefinition", "a", 900), obj("Namespace", "n", 50)
	role := obj("ClusterRole", "r", 400)
	deploy, svc := obj("Deployment", "d", 1200), obj("Service", "s", 300)
	handed := obj("Deployment", "h", 5000)
	handed.handOver = []string{"helm"}
	custom := obj("Stream", "x", 9000)
	custom.deferred = true

	for _, c := range []struct {
		name                       string
		first, cluster, namespaced []*item
		hooks                      bool
		want                       string
	}{
		{"the largest of the first stage", []*item{ns, crd}, []*item{role}, []*item{deploy}, false, "CustomResourceDefinition/a"},
		{"first stage before the hooks", []*item{ns}, []*item{role}, []*item{deploy}, true, "Namespace/n"},
		{"cluster-scoped next", nil, []*item{role}, []*item{deploy, svc}, false, "ClusterRole/r"},
		{"namespaced last", nil, nil, []*item{svc, deploy}, false, "Deployment/d"},
		{"none before a pre-phase hook", nil, []*item{role}, []*item{deploy}, true, ""},
		{"not one handed over first", nil, nil, []*item{handed, svc}, false, "Service/s"},
		{"not one waiting for its CRD", nil, nil, []*item{custom, svc}, false, "Service/s"},
		{"none left", nil, nil, []*item{handed, custom}, false, ""},
		{"nothing at all", nil, nil, nil, false, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			all := []*item{crd, ns, role, deploy, svc, handed, custom}
			for _, it := range all {
				it.lead = false
			}
			markLead(c.first, c.cluster, c.namespaced, c.hooks)
			var leads []string // every item marked, to see there is one at most
			for _, it := range all {
				if it.lead {
					leads = append(leads, it.ref.Kind+"/"+it.ref.Name)
				}
			}
			if c.want == "" {
				assert.Empty(t, leads)
			} else {
				assert.Equal(t, []string{c.want}, leads)
			}
		})
	}
}
