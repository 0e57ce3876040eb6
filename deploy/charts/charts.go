// Package charts holds troupe's Helm chart (troupe/, embedded for `troupe install`) and packages
// its dependencies into troupe/charts/ as `helm dependency build` would.
//
// The dependency is packaged with Helm's own SDK (helm.sh/helm/v4's chart loader and
// chartutil.Save), the code `helm package` and `helm dependency build` run: the archive is the
// one Helm would write, with no CLI to install and no network (the NATS chart is read from a
// directory, ../shared/fixtures on this machine).
package charts

import (
	"embed"
	"fmt"
	"os"
	"path/filepath"

	"github.com/Masterminds/semver/v3"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"
)

// Troupe is the chart's directory, troupe/, with whatever charts/ held when it was built.
//
//go:embed all:troupe
var Troupe embed.FS

// BuildDependencies packages each dependency chartDir's Chart.yaml declares into
// chartDir/charts/<name>-<version>.tgz, from the chart of that name under one of from (a
// directory holding the chart, or its parent), refusing one whose version the declaration does
// not admit. It returns the archives written.
func BuildDependencies(chartDir string, from ...string) ([]string, error) {
	c, err := loader.LoadDir(chartDir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, d := range c.Metadata.Dependencies {
		dep, err := find(d, from)
		if err != nil {
			return nil, fmt.Errorf("dependency %s: %w", d.Name, err)
		}
		dir := filepath.Join(chartDir, "charts")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		path, err := chartutil.Save(dep, dir)
		if err != nil {
			return nil, fmt.Errorf("dependency %s: %w", d.Name, err)
		}
		out = append(out, path)
	}
	return out, nil
}

// find is the chart d names, under from.
func find(d *chart.Dependency, from []string) (*chart.Chart, error) {
	want, err := semver.NewConstraint(d.Version)
	if err != nil {
		return nil, fmt.Errorf("version %q: %w", d.Version, err)
	}
	for _, dir := range from {
		for _, p := range []string{dir, filepath.Join(dir, d.Name)} {
			if _, err := os.Stat(filepath.Join(p, "Chart.yaml")); err != nil {
				continue
			}
			c, err := loader.LoadDir(p)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			if c.Name() != d.Name {
				continue
			}
			v, err := semver.NewVersion(c.Metadata.Version)
			if err != nil || !want.Check(v) {
				return nil, fmt.Errorf("%s is version %s, Chart.yaml asks for %s", p, c.Metadata.Version, d.Version)
			}
			return c, nil
		}
	}
	return nil, fmt.Errorf("not found in %v (version %s, from %s)", from, d.Version, d.Repository)
}
