package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestLeanBuildLinksNoServices: the CLI `make build` builds (-tags lean) links neither the services
// nor client-go — each costs every CLI process its package init and page faults (doc.go of
// internal/helmchart). The e2e tests run every command with that build.
func TestLeanBuildLinksNoServices(t *testing.T) {
	out, err := exec.Command("go", "list", "-tags", "lean", "-deps", ".").Output()
	require.NoError(t, err)
	for _, pkg := range strings.Fields(string(out)) {
		// services/ covers the history service too: the CLI speaks to it with events/historyapi.
		for _, heavy := range []string{"k8s.io/client-go/", "helm.sh/helm/v4/pkg/chart/common", "github.com/troupe-dev/troupe/services/"} {
			assert.False(t, strings.HasPrefix(pkg, heavy), "the lean CLI links %s", pkg)
		}
	}
}
