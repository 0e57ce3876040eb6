// Package health is troupe's health watcher: on release.applied it follows every object of the
// revision's inventory until all are Current (release.ready), one fails (release.failed, stage
// health, at once) or the revision's timeout passes, and keeps following ready releases to
// report release.degraded and release.recovered. A newer release.applied supersedes the wait of
// an older one; release.uninstalled lets the release go.
//
// Choices:
//
//   - Status per object is kstatus (github.com/fluxcd/cli-utils/pkg/kstatus/status), the library
//     Flux and Helm 4 wait with, so "ready" means what it means to their users. troupe adds what
//     kstatus does not wait for (a Job complete, a LoadBalancer Service's ingress) and what it
//     does not fail fast on (a workload's pod that cannot pull its image; kstatus only fails a
//     bare Pod that crash-loops).
//
//   - Event-driven: client-go informers (dynamic, one per resource, shared by every release, the
//     cluster's objects selected by troupe's release label so only troupe's are held), not
//     polling. Pods and ReplicaSets are watched only while a revision with workloads is
//     progressing (they are what fails fast, and a cluster's pods are many): one watch of each
//     across the cluster, shared by every release progressing and kept two minutes once unused
//     (so that releases one after another do not each list the cluster's pods again), or one per
//     namespace under PerNamespace. A watch per release's namespace cost ~0.4 MiB here and a
//     watcher in the API server each: 1000 releases progressing at once took 472 MiB.
//     Pods, Services, Deployments, StatefulSets and DaemonSets come through client-go's typed
//     informers and ReplicaSets through its metadata-only informer, all in protobuf and
//     uncompressed: they are most of what a rollout changes, and the API server encodes protobuf
//     (and metadata alone) for a fraction of what JSON costs it, once for every protobuf watcher
//     — its watch encoding was the second largest of what troupe added to its CPU in `make
//     bench-scale`'s profile. Informers keep slimmed objects (no managed fields, data, pod specs
//     or workloads' pod templates: kstatus reads a workload's counts and strategy, never its
//     template), typed ones as Go structs — a fraction of the memory of unstructured maps — made
//     unstructured for kstatus when read (watches.go).
//
//   - Deciding apart from doing: evaluate is a pure function from a revision's state and what the
//     watches show to a decision (evaluate.go); the outbox publishes the decision's event until
//     the stream acks it, and only then records the new phase (outbox.go), so a refused publish
//     is tried again rather than lost. Each release has one worker at a time (client-go's
//     workqueue): it runs what the event handlers ask of the release, judges it, and delivers.
//
//   - What is followed is recorded in a KV bucket (troupe-health), with the release.applied it
//     follows: a restarted watcher resumes every release, keeps its deadline, and checks the
//     stream before publishing a terminal event a predecessor may have published already.
//     Output ids derive from the release.applied, so a re-publish is a duplicate the stream drops.
//
//   - Replicas: one leads, the others stand by. The leader holds the "health" lease of the
//     troupe-leases bucket (events.Leases, renewed every third of --lease-ttl) and alone consumes
//     and follows; a standby takes the lease when it expires (the leader killed or cut off) or is
//     released (the leader stopped) and resumes every release from the KV bucket, as a restarted
//     watcher does. A lease rather than partitioning releases: one watch per kind is shared by
//     every release, and a partition would need as many watches per replica.
//
//   - A stale tracker never acts: before publishing an end, a degradation or a recovery, the
//     outbox checks that the record is at the KV revision the tracker last saw and that the stream
//     has no newer release.applied or release.uninstalled of the release; records are written
//     with compare-and-set (kv.Update, kv.Create, delete at a revision). So two replicas that both
//     believe they lead, for the moment one has not learnt it lost the lease, do not both act.
//
// Any number of replicas may run; README's health section says what they do.
package health
