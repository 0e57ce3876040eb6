package render

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"helm.sh/helm/v4/pkg/chart/common/util"
	hrelease "helm.sh/helm/v4/pkg/release/common"
	rspb "helm.sh/helm/v4/pkg/release/v1"
	"helm.sh/helm/v4/pkg/storage/driver"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/troupe-dev/troupe/events"
)

// Adopted is a Helm release a render read for adoption: its latest revision is the render's
// bundle; every revision (the latest too) comes with its own bundle and values, for the history.
type Adopted struct {
	Name      string
	Revision  int
	Secrets   []string
	Revisions []AdoptedRevision
}

// AdoptedRevision is one revision of an adopted Helm release.
type AdoptedRevision struct {
	events.HelmRevision
	Bundle []byte // its manifest as a bundle
	Values []byte // its events.ValuesRecord
}

// maxImported bounds the Helm revisions an adoption imports: the latest ones.
const maxImported = 100

// renderHelmRelease reads the Helm release src names from the release's namespace, with Helm's
// own storage driver (the Secrets it keeps each revision in, sh.helm.release.v1.NAME.vN), and
// makes its latest revision's manifest and hooks the bundle, with its values (the user-supplied
// config and the chart's, as `helm get values` shows them). Helm's pending states are refused:
// Helm is at work on the release.
func (r *Renderer) renderHelmRelease(ctx context.Context, in *pass) (*Output, error) {
	src := in.Request.Source.HelmRelease
	name := cmp.Or(src.Name, in.Release.Name)
	what := fmt.Sprintf("Helm release %s in namespace %s", name, in.Release.Namespace)
	if r.opts.Kube == nil {
		return nil, fail(ReasonSourceNotFound, nil, "%s: the renderer does not reach the cluster (--kubeconfig)", what)
	}
	found, err := driver.NewSecrets(r.opts.Kube.CoreV1().Secrets(in.Release.Namespace)).Query(map[string]string{"name": name, "owner": "helm"})
	switch {
	case errors.Is(err, driver.ErrReleaseNotFound):
		return nil, fail(ReasonSourceNotFound, nil, "%s: not found (no Secret sh.helm.release.v1.%s.v* labelled owner=helm)", what, name)
	case apierrors.IsForbidden(errors.Unwrap(err)) || apierrors.IsForbidden(err):
		return nil, fail(ReasonAuthDenied, nil, "%s: the renderer may not list Secrets there (RBAC)", what)
	case err != nil:
		return nil, fail(ReasonSourceUnreachable, err, "%s", what)
	}
	var revs []*rspb.Release
	for _, f := range found {
		if rel, ok := f.(*rspb.Release); ok && rel.Info != nil {
			revs = append(revs, rel)
		}
	}
	if len(revs) == 0 {
		return nil, fail(ReasonNotAChart, nil, "%s: none of its Secrets holds a release troupe can read", what)
	}
	slices.SortFunc(revs, func(a, b *rspb.Release) int { return a.Version - b.Version })
	latest := revs[len(revs)-1]
	switch latest.Info.Status {
	case hrelease.StatusPendingInstall, hrelease.StatusPendingUpgrade, hrelease.StatusPendingRollback, hrelease.StatusUninstalling:
		return nil, fail(ReasonUnsupported, nil, "%s: revision %d is %s: Helm is at work on it; adopt it once it is done", what, latest.Version, latest.Info.Status)
	case hrelease.StatusUninstalled:
		return nil, fail(ReasonSourceNotFound, nil, "%s: revision %d is uninstalled: nothing to take over", what, latest.Version)
	}
	out := &Output{Adopted: &Adopted{Name: name, Revision: latest.Version}}
	for _, rev := range revs {
		out.Adopted.Secrets = append(out.Adopted.Secrets, "sh.helm.release.v1."+name+".v"+strconv.Itoa(rev.Version))
	}
	if len(revs) > maxImported { // Helm keeps 10 by default (--history-max); the event stays small
		revs = revs[len(revs)-maxImported:]
	}
	for _, rev := range revs {
		b, err := r.helmRevisionBundle(in, rev)
		if err != nil {
			return nil, fail(ReasonInvalidOutput, err, "%s revision %d", what, rev.Version)
		}
		ar := AdoptedRevision{HelmRevision: events.HelmRevision{Revision: rev.Version, Status: rev.Info.Status.String(),
			Description: rev.Info.Description, Updated: rev.Info.LastDeployed.UTC(), Objects: len(b.Objects)}, Bundle: b.Bundle}
		if rev.Chart != nil && rev.Chart.Metadata != nil {
			ar.Chart = &events.ChartInfo{Name: rev.Chart.Metadata.Name, Version: rev.Chart.Metadata.Version, AppVersion: rev.Chart.Metadata.AppVersion}
			computed, err := util.CoalesceValues(rev.Chart, rev.Config)
			if err != nil {
				return nil, fail(ReasonInvalidValues, err, "%s revision %d: values", what, rev.Version)
			}
			if ar.Values, err = encodeValues(in.Release, rev.Config, computed, true); err != nil {
				return nil, err
			}
		}
		out.Adopted.Revisions = append(out.Adopted.Revisions, ar)
		if rev == latest {
			out.Bundle, out.Objects, out.Hooks, out.Values, out.Chart = b.Bundle, b.Objects, b.Hooks, ar.Values, ar.Chart
			out.Notes = rev.Info.Notes
		}
	}
	return out, nil
}

// helmRevisionBundle makes a Helm revision's manifest and hooks a bundle, as a chart's render
// output is made one (hooks told apart by their annotations, namespaces given, objects ordered).
func (r *Renderer) helmRevisionBundle(in *pass, rev *rspb.Release) (*Output, error) {
	files := map[string]string{"manifest": rev.Manifest}
	for i, h := range rev.Hooks {
		if h != nil {
			files[fmt.Sprintf("hook-%04d", i)] = h.Manifest
		}
	}
	res := &chartResult{}
	if err := splitChartOutput(files, res); err != nil {
		return nil, err
	}
	return r.bundle(in, res.objects, res.hooks, Output{})
}
