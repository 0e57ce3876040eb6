// Package helmengine is Helm's template engine — pkg/engine of the helm.sh/helm/v4 version in
// go.mod, copied here unchanged by copy.sh (`go generate`) — plus one thing Helm's package cannot
// do from outside: keep a chart's templates parsed between renders (cached.go, troupe's own).
//
// Why a copy: Helm's engine parses every template of a chart on every render (text/template
// parsing, a third of a render's time), and everything it would take to parse once and execute
// many times (its function map, include and tpl bound to the template set, the scoped values and
// .Files, its error messages) is unexported. The renderer renders the same chart again and again
// with other values, so it parses once per set of templates (names and text) and executes a
// clone of the parsed set each time, with Helm's own code for everything else.
//
// Keeping the copy Helm's: TestCopyIsHelms fails when a file here differs from Helm's in the
// module cache (after a Helm upgrade: run `make generate`), and the renderer's tests hold
// RenderCached to Helm's own engine, output and errors, for every fixture chart.
package helmengine

//go:generate sh copy.sh
