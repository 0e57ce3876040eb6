// Package cluster runs a real, local Kubernetes control plane for tests and for `troupe dev`:
// etcd, kube-apiserver (RBAC on), kube-controller-manager, kube-scheduler, and kwok with one fake
// node whose pods become Ready without a container runtime. The binaries are built from
// Kubernetes', etcd's and kwok's own Go modules (test/cluster/tools, `make cluster-bin`): nothing
// is downloaded, and what the tests talk to is the real API server — server-side apply, field
// managers, admission, CRDs, RBAC, Deployments rolling out — not a fake clientset.
//
// Start generates a PKI and an admin kubeconfig in a directory of its own, picks free ports,
// starts the processes in order and waits until each is ready; Stop ends them in reverse order
// (the API server before etcd) and waits for every one. Child processes also die with the process
// that started them, so a crashed test leaves nothing behind.
//
// Pods are driven by kwok's stock "fast" stages, read from the kwok module (node initialise,
// node heartbeat with lease, pod ready, pod complete, pod delete). A pod annotated with
// FaultAnnotation instead crash-loops, fails to pull its image, never becomes ready, or fails (a
// Job's pod, for hooks), for the health watcher's and the applier's tests.
//
// Components authenticate with client certificates in group system:masters: this is a harness,
// not a hardened cluster. The controller manager's client rate limits are raised and its
// deployment and replica set workers multiplied, so that the cluster is not the bottleneck of
// troupe's benchmarks.
package cluster
