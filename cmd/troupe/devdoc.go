package main

// The dev command's help, shared by the full build (dev.go: the services in process) and the
// lean one (dev_lean.go: hands over to troupe-dev).
const (
	installShort = "Install troupe on a cluster: its chart, rendered and applied by troupe itself, with NATS"
	devShort     = "Run an embedded NATS JetStream, a local Kubernetes cluster and every troupe service"
	devLong      = `Run a local troupe: an embedded nats-server with JetStream (its data in --store-dir), troupe's
streams and buckets provisioned, and every troupe service (renderer, applier, health, history) in
this process. Prints the NATS URL for the other commands. Stops cleanly on Ctrl-C (a second
Ctrl-C exits at once).

NATS runs with authentication on: one identity per service, the CLI, a viewer and an admin
('troupe identities'), each with only its permissions. Their credentials files are written to
<store-dir>/creds (mode 0600) at every start: the other commands use cli.creds from there by
default; admin.creds may do anything (the nats CLI: nats --creds .troupe/creds/admin.creds).
With --subjects-prefix, the sandbox connects as the admin (--creds, else admin.creds).

Without --kubeconfig it also starts the local Kubernetes cluster (etcd, kube-apiserver,
controller-manager, scheduler and a kwok node, built by 'make cluster-bin' into bin/) and writes
its admin kubeconfig to <store-dir>/kubeconfig; with --kubeconfig (and --context) the services
deploy to that cluster instead. The cluster's binaries are found with --cluster-bin, else beside
this executable (where 'make build' puts troupe and troupe-dev), else in bin/ beside the go.work
above the working directory.

Serves /healthz, /readyz, /metrics and the history's /releases on --http-listen (loopback only: the API serves manifests).`
)
