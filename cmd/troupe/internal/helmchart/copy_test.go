package helmchart

import (
	"go/format"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCopyIsHelms: the copied files are Helm's, of the version in go.mod, but for the import
// paths of the copies (gofmt sorts them). After a Helm upgrade this fails until `make generate` copies them again.
func TestCopyIsHelms(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}} {{.Version}}", "helm.sh/helm/v4").Output()
	require.NoError(t, err)
	dir, version, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	recorded, err := os.ReadFile("HELM_VERSION")
	require.NoError(t, err)
	assert.Equal(t, version, strings.TrimSpace(string(recorded)), "copied from another Helm: run `make generate`")
	here := "github.com/troupe-dev/troupe/cmd/troupe/internal/helmchart"
	imports := strings.NewReplacer(
		`"helm.sh/helm/v4/pkg/chart/common"`, `"`+here+`/common"`,
		`"helm.sh/helm/v4/pkg/chart/v2"`, `"`+here+`/v2"`,
		`"helm.sh/helm/v4/internal/sympath"`, `"`+here+`/sympath"`,
	)
	copies := map[string]string{ // copy → Helm's
		"common/errors.go":       "pkg/chart/common/errors.go",
		"common/file.go":         "pkg/chart/common/file.go",
		"common/values.go":       "pkg/chart/common/values.go",
		"v2/chart.go":            "pkg/chart/v2/chart.go",
		"v2/dependency.go":       "pkg/chart/v2/dependency.go",
		"v2/doc.go":              "pkg/chart/v2/doc.go",
		"v2/errors.go":           "pkg/chart/v2/errors.go",
		"v2/metadata.go":         "pkg/chart/v2/metadata.go",
		"v2/loader/archive.go":   "pkg/chart/v2/loader/archive.go",
		"v2/loader/directory.go": "pkg/chart/v2/loader/directory.go",
		"v2/loader/load.go":      "pkg/chart/v2/loader/load.go",
		"sympath/walk.go":        "internal/sympath/walk.go",
	}
	for copied, helm := range copies {
		h, err := os.ReadFile(filepath.Join(dir, helm))
		require.NoError(t, err)
		c, err := os.ReadFile(copied)
		require.NoError(t, err)
		want, err := format.Source([]byte(imports.Replace(string(h))))
		require.NoError(t, err)
		assert.True(t, string(want) == string(c), "%s differs from Helm %s's %s: run `make generate`", copied, version, helm)
	}
	// Every Go file here is a copy, but for this package's own.
	var found []string
	require.NoError(t, filepath.WalkDir(".", func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".go") && filepath.Dir(p) != "." {
			found = append(found, p)
		}
		return err
	}))
	assert.Len(t, found, len(copies), "a file here that copy.sh does not write: %v", found)
}
