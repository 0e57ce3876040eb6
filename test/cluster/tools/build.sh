#!/usr/bin/env bash
# Builds the local cluster's binaries from Kubernetes', etcd's and kwok's Go modules into $1
# (default ./bin at the repository root). Called by `make cluster-bin`; a cold build takes ~10
# minutes on 2 cores, a rebuild with a warm Go cache seconds.
set -euo pipefail
cd "$(dirname "$0")"
out=$(cd ../../.. && pwd)/bin
out=${1:-$out}
mkdir -p "$out"
export GOWORK=off

k8s=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)       # v1.37.1
minor=$(echo "$k8s" | cut -d. -f2)
ver() { for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  printf -- '-X %s.gitVersion=%s -X %s.gitMajor=1 -X %s.gitMinor=%s -X %s.gitTreeState=clean ' "$p" "$k8s" "$p" "$p" "$minor" "$p"; done; }

# A cold build is long and go build is silent: say it is still going.
( while sleep 30; do echo "  ... still building ($((SECONDS / 60))m$((SECONDS % 60))s so far; ~10 minutes the first time, seconds after)"; done ) &
ticker=$!
trap 'kill $ticker 2>/dev/null || true' EXIT

echo "building kube-apiserver, kube-controller-manager, kube-scheduler, kubectl $k8s into $out"
go build -ldflags "-s -w $(ver)" -o "$out/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubectl
echo "building etcd $(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)"
go build -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3
kwok=$(go list -m -f '{{.Version}}' sigs.k8s.io/kwok)
echo "building kwok $kwok"
go build -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$kwok" -o "$out/kwok" sigs.k8s.io/kwok/cmd/kwok
helm=$(go list -m -f '{{.Version}}' helm.sh/helm/v4)
echo "building helm $helm (the baseline of the renderer's benchmark)"
go build -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$helm" -o "$out/helm" helm.sh/helm/v4/cmd/helm
