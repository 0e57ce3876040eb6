// Package render turns a release.requested into a canonical manifest bundle.
//
// Helm charts are rendered by Helm's own Go SDK (helm.sh/helm/v4), with the steps and functions
// its install action runs for `helm template` (dependencies, values and values.schema.json,
// .Release and .Capabilities, the template engine, NOTES.txt, hooks set apart from the
// manifests) — called directly so that .Release.Revision and .IsUpgrade follow the revision,
// which the install action fixes at 1; a test holds the output, object by object and field by
// field, to the install action's for every fixture chart. Charts come from a directory, a .tgz,
// the sources object store (by digest), an OCI registry (Helm's registry client) or an HTTP
// repository (its index.yaml, Helm's semver matching). Kustomize overlays are built with
// kustomize's API (sigs.k8s.io/kustomize/api/krusty), as `kustomize build` does. Hand-written
// renderers of either would drift from the tools users compare troupe against.
//
// What a render of the same chart with other values need not do again is kept: an uploaded chart
// loaded once per digest, values files parsed once per content, and the chart's templates parsed
// once per set of names and text — the one place troupe runs a copy of Helm's engine
// (internal/helmengine: Helm's files unchanged, plus the parse-once render Helm's package does not
// export). Rendered YAML is split and parsed once per document, with the semantics of
// sigs.k8s.io/yaml that Helm and Kubernetes read it with (fuzz tests hold both to the originals).
//
// The result is an events.Bundle: objects parsed and checked (apiVersion, kind, name, string
// annotations), namespaced kinds given the release's namespace when they have none (a built-in
// table of Kubernetes' own cluster-scoped kinds, the bundle's own CRDs, and optional API
// discovery), ordered for applying, and encoded as JSON with sorted keys, so equal inputs give
// equal bytes and equal digests.
//
// Path sources read the renderer's own disk: only under Options.SourceRoots, symlinks resolved
// (the standard library's filepath.EvalSymlinks; kustomize reads through a filesys.FileSystem
// that refuses anything outside them), and refused alike whether a path outside exists or not.
//
// Kustomize's own remote loading is never used (krusty has no switch for it, no timeout and no
// host list): a kustomization naming anything remote fails, unless Options.KustomizeRemoteHosts
// lists the host, and then the renderer fetches each piece itself and builds from copies in
// memory (an overlay filesys.FileSystem). Files come with net/http; repositories with the git CLI
// rather than a Go git library such as go-git: kustomize itself clones with the git CLI, so refs,
// transports and servers behave as under `kustomize build`, and a process can be killed with
// everything it started when the timeout passes or its scratch directory outgrows the budget.
//
// With a cluster (Discover), .Capabilities follow it (a metadata informer on CRDs and
// APIServices says when to read discovery again) and a chart's lookup is Helm's own lookup
// function over a provider that confines it (lookup.go). Dependencies not in a chart's charts/
// are fetched with the same repository and registry clients as charts (deps.go); post-renderers
// are kustomize's API over an in-memory kustomization, as Flux's HelmRelease runs them. A Helm
// release to adopt is read with Helm's own storage driver (helm.sh/helm/v4/pkg/storage/driver),
// which knows every encoding Helm wrote its release Secrets in.
//
// Every failure is an *events.Error with a reason code (template_error, values_schema, not_a_chart, …)
// and a message that names what and where.
package render
