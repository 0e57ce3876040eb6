// Package helmchart holds Helm's chart loader — pkg/chart/v2/loader of the helm.sh/helm/v4
// version in go.mod, with the parts of Helm it needs (pkg/chart/v2, pkg/chart/common and
// internal/sympath) — copied by copy.sh (`go generate`, `make generate`) unchanged but for the
// import paths between the copies, and without one file: common/capabilities.go.
//
// Why a copy: the CLI loads a local chart as Helm does before it sends anything (a broken chart
// is an error at the prompt, and the archive it uploads holds exactly the files Helm loads,
// .helmignore applied). Helm's pkg/chart/common also holds the Kubernetes capabilities, which
// import client-go's scheme with every built-in API type; linking it costs each CLI process
// ~30 ms of CPU and ~600 page faults before main, and scripts run one `troupe release` per
// release (measured: 75 ms → 43 ms of CPU per `troupe release` of the podinfo chart; the
// throughput table of `make bench`). The loader never uses the capabilities.
//
// Keeping the copy Helm's: TestCopyIsHelms fails when a file here differs from Helm's in the
// module cache (after a Helm upgrade: run `make generate`), and the CLI's tests load the fixture
// charts with both and compare.
package helmchart

//go:generate sh copy.sh
