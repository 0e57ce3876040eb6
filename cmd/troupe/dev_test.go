//go:build !lean

package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDevSaysWhereItLookedForTheCluster: without --kubeconfig, troupe dev looks for the local
// cluster's binaries with --cluster-bin, beside its executable and in bin/ beside a go.work; when
// none has them, it says so for each, and exits 1.
func TestDevSaysWhereItLookedForTheCluster(t *testing.T) {
	t.Setenv("TROUPE_CLUSTER_BIN", "")
	t.Setenv("TROUPE_KUBECONFIG", "")
	wd := t.TempDir()
	t.Chdir(wd) // no go.work above
	exe, err := os.Executable()
	require.NoError(t, err)
	exe, err = filepath.EvalSymlinks(exe)
	require.NoError(t, err)

	var out, errOut syncBuffer
	code := run(t.Context(), []string{"dev", "--nats-listen", "127.0.0.1:-1", "--http-listen", "127.0.0.1:0", "--store-dir", t.TempDir()}, nil, &out, &errOut)
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut.String(), "cluster: the cluster's binaries are in none of: "+
		"--cluster-bin or $TROUPE_CLUSTER_BIN (not set); "+
		filepath.Dir(exe)+" beside the executable (no etcd); "+
		"bin/ beside go.work (no go.work in "+wd+" or above); "+
		"build them with `make cluster-bin` (~10 min the first time); or pass --kubeconfig to use another cluster")
}
