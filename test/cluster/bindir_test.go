package cluster_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/test/cluster"
)

// TestBinDirsFind: the cluster's binaries are taken from the setting if there is one (and only
// from there), else from beside the executable, else from bin/ beside go.work; when none has
// them the error names every place looked in.
func TestBinDirsFind(t *testing.T) {
	root := t.TempDir()
	// dir makes a directory under root holding the named binaries (empty files will do).
	dir := func(name string, bins ...string) string {
		d := filepath.Join(root, name)
		require.NoError(t, os.MkdirAll(d, 0o755))
		for _, b := range bins {
			require.NoError(t, os.WriteFile(filepath.Join(d, b), nil, 0o755))
		}
		return d
	}
	all := cluster.Binaries
	set := dir("set", all...)
	setPartial := dir("set-partial", all[1:]...) // no etcd
	exeFull := filepath.Join(dir("exe-full", all...), "troupe-dev")
	exeBare := filepath.Join(dir("exe-bare", "troupe"), "troupe-dev")
	dir("work", "go.work")
	workBin := dir("work/bin", all...)
	workWd := dir("work/cmd/troupe")
	bareWork := dir("bare-work", "go.work")
	dir("bare-work/bin", all[:len(all)-1]...) // no kwok
	noWork := dir("no-work")

	for _, tc := range []struct {
		name    string
		dirs    cluster.BinDirs
		want    string
		wantErr string
	}{
		{"the setting first", cluster.BinDirs{Set: set, Executable: exeFull, WorkDir: workWd}, set, ""},
		{"a setting without them is an error", cluster.BinDirs{Set: setPartial, SetBy: "--cluster-bin", Executable: exeFull, WorkDir: workWd}, "",
			"cluster: etcd is missing in " + setPartial + " (--cluster-bin): build them with `make cluster-bin` (~10 min the first time)"},
		{"beside the executable before go.work", cluster.BinDirs{Executable: exeFull, WorkDir: workWd}, filepath.Dir(exeFull), ""},
		{"bin beside go.work", cluster.BinDirs{Executable: exeBare, WorkDir: workWd}, workBin, ""},
		{"no go.work", cluster.BinDirs{SetBy: "--cluster-bin or $TROUPE_CLUSTER_BIN", Executable: exeBare, WorkDir: noWork}, "",
			"cluster: the cluster's binaries are in none of: --cluster-bin or $TROUPE_CLUSTER_BIN (not set); " +
				filepath.Dir(exeBare) + " beside the executable (no etcd); " +
				"bin/ beside go.work (no go.work in " + noWork + " or above); " +
				"build them with `make cluster-bin` (~10 min the first time)"},
		{"bin beside go.work without them", cluster.BinDirs{SetBy: "$TROUPE_CLUSTER_BIN", Executable: exeBare, WorkDir: bareWork}, "",
			"cluster: the cluster's binaries are in none of: $TROUPE_CLUSTER_BIN (not set); " +
				filepath.Dir(exeBare) + " beside the executable (no etcd); " +
				filepath.Join(bareWork, "bin") + " beside go.work (no kwok); " +
				"build them with `make cluster-bin` (~10 min the first time)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.dirs.Find()
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Equal(t, tc.wantErr, err.Error())
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}
