// Package apply applies a revision's bundle to a Kubernetes cluster with server-side apply:
// validated by a server-side dry run of every object before anything changes, staged (CRDs and
// Namespaces, then the rest), with the previous revision's leftovers pruned, and ownership by
// release checked. It is the cluster half of troupe's applier service; the service adds the
// events, the per-release lease and the inventory.
package apply
