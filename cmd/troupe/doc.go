// Command troupe is troupe's CLI. Every command but dev talks to a running troupe over NATS —
// `troupe dev` locally, or any NATS deployment (--server, TROUPE_SERVER, and the other
// connection flags of events.ConnOptions) — and takes --subjects-prefix to work in a sandbox.
//
// The commands, by file:
//
//   - dev (dev.go; dev_lean.go in the lean build hands over to troupe-dev): an embedded NATS
//     JetStream with troupe's streams, the local Kubernetes cluster (test/cluster) unless
//     --kubeconfig, and the four services plus catalog-check in one process.
//   - release (release.go): checks everything it can locally (names, values files,
//     --set, that the chart loads with the copy of Helm's loader in internal/helmchart), uploads
//     a local source by digest, publishes release.requested; --wait follows it (follow.go,
//     which also says what the gates a revision waits for decide: flow.Follow does not).
//   - gate require, remove, list, creds; approve, reject (gate.go): the namespaces' gate policy
//     (events.GatePolicy, the admin's to write), a gate's credentials (access.Gate), and a
//     person's decision asked of a gate (events.GateDecision, as the approver).
//   - rollback, uninstall (actions.go): publish release.rollback.requested and
//     release.uninstall.requested, through the same send and --wait as release.
//   - status, list, history, get manifest, diff (inspect.go, query.go): ask the history service
//     (troupe.history.* request/reply).
//   - trace (trace.go): rebuilds a revision's cross-service timeline from the stream.
//   - replay (replay.go): re-delivers a range of the stream, printed or into a sandbox.
//   - graph, version (graph.go, version.go): discover the running services from $SRV.INFO.
//   - publish, tail (publish.go, tail.go): put single events on the stream and read them back,
//     dead letters too.
//
// The CLI is built on cobra, the command library of helm, flux and kubectl, so verbs, flags and
// help read the way users of those tools expect. `make build` builds it twice: bin/troupe with
// -tags lean (no service, no client-go: ~30 ms to start, for scripts running one release each)
// and bin/troupe-dev with the services in.
package main
