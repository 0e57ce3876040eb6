#!/bin/sh
# Copies Helm's chart loader (pkg/chart/v2/loader of the helm.sh/helm/v4 version in go.mod) here
# with what it needs of Helm — pkg/chart/v2, pkg/chart/common without capabilities.go, and
# internal/sympath — unchanged but for the import paths of the copies (and gofmt, which sorts them). Run by `go generate`
# (`make generate`) after a Helm upgrade; TestCopyIsHelms fails until it is run.
set -eu
cd "$(dirname "$0")"
helm="$(gofmt -w common v2 sympath # the rewritten imports sort elsewhere
go list -m -f '{{.Dir}}' helm.sh/helm/v4)"
here=github.com/troupe-dev/troupe/cmd/troupe/internal/helmchart
copy() { # copy SRC-DIR DEST-DIR FILE...
	src=$1 dest=$2
	shift 2
	mkdir -p "$dest"
	for f in "$@"; do
		sed -e "s#\"helm.sh/helm/v4/pkg/chart/common\"#\"$here/common\"#" \
			-e "s#\"helm.sh/helm/v4/pkg/chart/v2\"#\"$here/v2\"#" \
			-e "s#\"helm.sh/helm/v4/internal/sympath\"#\"$here/sympath\"#" \
			"$helm/$src/$f" >"$dest/$f"
		chmod 644 "$dest/$f"
	done
}
copy pkg/chart/common common errors.go file.go values.go
copy pkg/chart/v2 v2 chart.go dependency.go doc.go errors.go metadata.go
copy pkg/chart/v2/loader v2/loader archive.go directory.go load.go
copy internal/sympath sympath walk.go
gofmt -w common v2 sympath # the rewritten imports sort elsewhere
go list -m -f '{{.Version}}' helm.sh/helm/v4 >HELM_VERSION
