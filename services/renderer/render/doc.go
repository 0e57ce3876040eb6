// Package render turns a release.requested into a canonical manifest bundle.
//
// Helm charts are rendered by Helm's own Go SDK (helm.sh/helm/v4): its install action in
// client-only dry-run mode with an in-memory release store, which is what `helm template` and
// `helm install --dry-run` run — values merged as Helm merges them, values.schema.json enforced,
// subcharts, library charts, kubeVersion constraints, crds/, hooks and NOTES.txt exactly as Helm
// does them. Charts come from a directory, a .tgz, the sources object store (by digest), an OCI
// registry (Helm's registry client) or an HTTP repository (its index.yaml, Helm's semver
// matching). Kustomize overlays are built with kustomize's API (sigs.k8s.io/kustomize/api/krusty),
// as `kustomize build` does. Hand-written renderers of either would drift from the tools users
// compare troupe against.
//
// The result is a Bundle: objects parsed and checked (apiVersion, kind, name), namespaced kinds
// given the release's namespace when they have none (a built-in table of Kubernetes' own
// cluster-scoped kinds, the bundle's own CRDs, and optional API discovery), ordered for applying,
// and encoded as JSON with sorted keys, so equal inputs give equal bytes and equal digests.
//
// Every failure is an *Error with a reason code (template_error, values_schema, not_a_chart, …)
// and a message that names what and where.
//
// Known gap: .Release.Revision is always 1 inside templates (Helm's install action fixes it);
// .Release.IsUpgrade and .Release.IsInstall follow the revision.
package render
