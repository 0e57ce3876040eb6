// Command cdevents publishes CDEvents (https://cdevents.dev) for troupe's flows to a CloudEvents
// HTTP sink: a dashboard, a CDEvents broker, a Flux notification-controller Receiver. It is a
// troupe subscriber like examples/notifier — a durable consumer of its own name, connected as the
// `subscriber` identity, publishing nothing in the catalog — and nobody else changes for it.
//
// # What it sends
//
// One CDEvent per finished flow, of CDEvents v0.5.1 (the newest release; github.com/cdevents/sdk-go
// v0.5.1, the newest SDK), or of v0.4.1 with --spec 0.4 (service.*.0.2.0, the same mapping) for a
// consumer built on an older SDK: Flux's CDEvents Receiver reads them with the SDK's v0.4 package.
//
//	release.ready        → dev.cdevents.service.deployed.0.3.0    the release had no ready revision before (a first install, or the first since an uninstall)
//	                       dev.cdevents.service.upgraded.0.3.0    it had one: a later revision is ready
//	                       dev.cdevents.service.rolledback.0.3.0  the flow was a rollback (its release.rendered says so)
//	release.uninstalled  → dev.cdevents.service.removed.0.3.0     when the release had a ready revision (else nothing of it ran)
//
// A failed, superseded or dry-run flow changed no running service: it gets no service event.
// Their subject is the release (<namespace>/<name>), the environment its namespace; the artifact
// is the chart the revision rendered, as a package URL (pkg:generic/<chart>@<version>), or its
// rendered bundle (pkg:generic/<release>@sha256:…) for kustomize and plain manifests. The chain
// id is troupe's correlation id (every CDEvent of one flow shares it), and the custom data names
// the troupe event, revision and flow, for `troupe trace`.
//
// Reconciliation. What a troupe flow is — converging a release onto what a request declared —
// CDEvents describes only in a draft: reconciliation.started and .finished, a proposal
// (cdevents/spec#325: dev.cdevents.reconciliation.started/finished.0.1.0-draft, for the next
// spec, 0.6.0-draft). No released spec has them, and so no SDK version: v0.5.1 has no
// reconciliation type. The bridge sends them as what the SDK does support, custom events
// (dev.cdeventsx.<tool>-<subject>.<predicate>.<version>) of the draft's shape:
//
//	release.requested, release.rollback.requested,
//	release.uninstall.requested  → dev.cdeventsx.troupe-reconciliation.started.0.1.0
//	release.ready, .uninstalled  → dev.cdeventsx.troupe-reconciliation.finished.0.1.0  outcome success
//	release.diffed (a dry run)   →                                                     outcome success, changed false
//	release.failed               →                                                     outcome failure, reason "<stage>: <reason>: <message>"
//	release.superseded           →                                                     outcome cancel, reason "superseded by …"
//
// with the draft's subject content (desiredState: the request, by id; target: the release;
// changed, outcome, reason) and a schemaUri naming our schema of them (schemas/, embedded, loaded
// into the SDK): so every flow has one started and one finished. A consumer that validates with
// the CDEvents SDK must load those schemas too (api.LoadJsonSchema), or it rejects the events;
// --reconciliation=false leaves them out. Once the spec and the SDK release the draft, the
// custom types give way to the real ones.
//
// # How
//
// The ready and uninstalled events do not say everything: whether the flow was a rollback, what
// it rendered, whether the release was running before. The bridge reads that from the events
// stream — the source of truth, which the subscriber identity may read — rather than remembering
// earlier events: the flow's release.rendered (its correlation id, from its request time on), and
// the release's last release.uninstalled and first release.ready since, before the event's own
// stream position. Nothing is kept in memory, so replicas share the consumer and a restart loses
// nothing (replicas send in the stream's order only each their own events: one replica keeps the
// sink's order). (The stream keeps events for its max age: a release whose first request aged out of it,
// and with no ready revision in what is left, is taken to be running.)
//
// An event is acked only once the sink took every CDEvent it maps to (a 2xx answer); otherwise
// the subscriber naks it and it comes again after the backoff, up to --max-deliver tries, then it
// is dead-lettered (`troupe tail --dead-letters`), never dropped. CDEvent ids are derived from the
// troupe event's, so an event sent again has the same id and a sink can drop the duplicate. One
// event is handled at a time, so while the sink takes them CDEvents arrive in the stream's order.
//
// # Why these libraries
//
// The CDEvents Go SDK (github.com/cdevents/sdk-go) is the spec's own code: its event types are
// generated from the spec's JSON schemas, and its Validate checks an event against those schemas
// (and a custom event against the schema its schemaUri names) — so what the bridge sends is a
// CDEvent by the spec's definition, validated before it leaves, not a hand-written look-alike.
// The CloudEvents Go SDK (github.com/cloudevents/sdk-go/v2, the module the events package already
// uses for its event model) is the CloudEvents HTTP protocol binding: binary or structured mode,
// the ce-* headers, and the ACK/NACK of the sink's answer, as every CloudEvents receiver expects.
// The CDEvents SDK turns a CDEvent into a CloudEvents event (AsCloudEvent); the CloudEvents
// client sends it. (SDK v0.5.1 gives a custom event the CloudEvents type of its empty default;
// the bridge sets the event's real type.)
package main
