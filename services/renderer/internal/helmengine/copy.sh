#!/bin/sh
# Copies Helm's template engine (pkg/engine of the helm.sh/helm/v4 version in go.mod) here,
# unchanged but for the package name. Run by `go generate` (`make generate`) after a Helm upgrade;
# TestCopyIsHelms fails until it is run.
set -eu
cd "$(dirname "$0")"
src="$(go list -m -f '{{.Dir}}' helm.sh/helm/v4)/pkg/engine"
for f in engine.go funcs.go files.go lookup_func.go; do
	sed 's/^package engine$/package helmengine/' "$src/$f" >"$f"
done
go list -m -f '{{.Version}}' helm.sh/helm/v4 >HELM_VERSION
