// Package rules is the policy gate's judgement, kept apart from NATS: Check reads a rendered
// bundle and returns what breaks the rules, one events.Finding per object and container, each
// naming its rule and its object. It is a pure function of the bundle, the release and the
// Config: the same bundle gets the same findings, in the same order, wherever it is judged.
//
// The rules:
//
//   - image-digest (RuleImageDigest): every container's image is pinned by a sha256 digest
//     (image@sha256:…). With Config.RequireDigest false the softer rule holds instead: no image
//     uses the tag latest, or no tag at all, which means latest. A digest pins the image
//     whatever its tag says (nginx:latest@sha256:… passes).
//   - resource-limits (RuleResourceLimits): every container has resources.limits.cpu and
//     resources.limits.memory, or its pod has both at the pod level (spec.resources.limits,
//     Kubernetes' pod-level resources). Ephemeral containers are left out: Kubernetes allows
//     them no resources.
//   - no-loadbalancer (RuleNoLoadBalancer): no Service of type LoadBalancer in a namespace of
//     Config.ForbidLoadBalancerIn ("*": every namespace).
//
// Containers are those of Pods and of the pod templates of Deployments, StatefulSets,
// DaemonSets, ReplicaSets, ReplicationControllers, PodTemplates, Jobs and CronJobs (their
// containers, initContainers and ephemeralContainers). The bundle's objects are judged, and so
// are its hooks (Bundle.Hooks: a chart's pre-install Job runs in the cluster too). An object's
// namespace is its metadata.namespace, or the release's when it has none.
//
// The gate sees only the bundle, never the cluster: a LimitRange already in the namespace that
// gives containers default limits is not known to it, and such containers are reported.
package rules

// The real charts the tests judge (testdata/charts) are rendered from ../shared/fixtures with
// `helm template`, and committed.
//go:generate testdata/charts/generate.sh
