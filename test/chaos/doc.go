// Package chaos is troupe's chaos harness: it runs the whole mesh as processes — a 3-node
// nats-server cluster (streams and buckets R3), the local Kubernetes cluster of test/cluster, two
// replicas of each service — drives a burst of releases through the troupe CLI (installs,
// upgrades, rollbacks, uninstalls, dry runs) while it SIGKILLs service processes, kills one NATS
// node and restarts the whole NATS cluster, and then checks the promise troupe makes: every
// revision ends in exactly one terminal event within its deadline, and the cluster holds what
// the last one says.
//
// The check (Check) is a pure function over what the run collected — every message of the events
// stream, the dead letters, the objects in the cluster, the CLI calls that failed — so it is
// table-tested with hand-made event lists and shown able to fail. Collecting reads the stream
// message by message and counts what is stored, never relying on the stream's duplicate window:
// a terminal event stored twice counts twice.
//
// Processes, not goroutines: a crash is a SIGKILL, a NATS failure a killed nats-server, as in
// production. The nats-server binary is built from the nats-server module the repository pins
// (this module's `tool` directive), the services' and the CLI's from their cmd/ packages.
//
// `go test ./test/chaos` runs a short variant (about a minute of chaos); `make chaos` a long one
// (CHAOS_REVISIONS, CHAOS_RELEASES, … in Config).
package chaos
