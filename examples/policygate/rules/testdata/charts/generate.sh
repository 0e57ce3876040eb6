#!/usr/bin/env bash
# Renders the shared fixture charts (../shared/fixtures beside the repository) with `helm
# template` into the YAML that the rules' tests judge: real charts nobody here wrote. Run by `go
# generate ./...` in examples/policygate; helm is the one `make cluster-bin` builds into ./bin
# (HELM overrides it, FIXTURES the fixtures' directory). The output is committed: the tests need
# neither helm nor the fixtures.
set -euo pipefail
cd "$(dirname "$0")"
root=$(git rev-parse --show-toplevel)
helm=${HELM:-$root/bin/helm}
fixtures=${FIXTURES:-$root/../shared/fixtures}
[ -x "$helm" ] || { echo "generate.sh: no helm at $helm: make cluster-bin builds it (or set HELM)" >&2; exit 1; }

# A digest for the charts whose image is pinned (what `crane digest` would give; any sha256 will do).
digest=sha256:5f2b0e5f8c1a4d3e9b7c6a5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f

# render OUT RELEASE CHART ARGS... writes `helm template RELEASE CHART ARGS...` to OUT, under a
# header that says how it was made.
render() {
  local out=$1 release=$2 chart=$3
  shift 3
  { echo "# helm template $release fixtures/$chart $* — written by generate.sh, do not edit"
    "$helm" template "$release" "$fixtures/$chart" "$@"; } > "$out.tmp"
  mv "$out.tmp" "$out"
}

render podinfo.yaml podinfo podinfo/charts/podinfo -n demo
render podinfo-pinned.yaml podinfo podinfo/charts/podinfo -n demo \
  --set image.tag=6.14.1@$digest --set resources.limits.cpu=500m --set resources.limits.memory=256Mi
render postgresql.yaml db postgresql/postgresql -n data --set image.digest=$digest
render postgresql-loadbalancer.yaml db postgresql/postgresql -n data --set image.digest=$digest --set primary.service.type=LoadBalancer
render nats.yaml nats nats/helm/charts/nats -n messaging
# (its CustomResourceDefinitions left out: 1.8 MB the rules have nothing to say about)
render argo-cd.yaml argocd argo-cd/argo-cd -n argocd --set crds.install=false
