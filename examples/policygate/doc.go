// Command policygate is a troupe gate that rejects a rendered revision whose bundle breaks
// simple rules, and approves the others: a peer that takes part in a release, not only watches
// it. Each rejection's findings name the rule and the object (and container) to fix:
//
//	image-digest     a container's image is not pinned by a sha256 digest (--require-digest,
//	                 the default), or, with --require-digest=false, uses the tag latest or no tag
//	resource-limits  a container has no resources.limits.cpu or resources.limits.memory
//	no-loadbalancer  a Service of type LoadBalancer in a namespace of --forbid-loadbalancer-in
//	                 ("*": every namespace)
//
// The rules judge the bundle's objects and its hooks (a chart's pre-install Job runs in the
// cluster too); an object without metadata.namespace is in the release's namespace. They live
// in package rules, a pure function of the bundle (rules.Check): what they find, and why, is
// documented there.
//
// # How it joins
//
// A release asks for the gate by name — `troupe release … --gate policy` (its options.gates),
// or, so that no requester can skip it, a namespace's policy: `troupe gate require policy -n
// prod`. The renderer lists the gates a revision needs in its release.rendered (Rendered.Gates);
// the gate judges every revision that names it, reading its bundle from the bundles object store,
// and publishes release.approved or release.rejected for that revision and that bundle digest;
// the applier applies the revision only once every gate it needs approved it, and fails it at
// stage gate, with the findings, on a rejection. A dry run is judged too: its release.diffed
// reports what the gate said. Nobody else changes for the gate, and `troupe graph` shows it.
//
// # Running it
//
// Beside `troupe dev`, or anywhere that reaches troupe's NATS:
//
//	troupe gate creds policy        # the gate's own identity (see below): .troupe/creds/gate-policy.creds
//	go run ./examples/policygate --creds .troupe/creds/gate-policy.creds --http-listen 127.0.0.1:8082 \
//	  --forbid-loadbalancer-in prod,staging
//	troupe gate require policy -n prod                                # every revision in prod, or one:
//	troupe release hello examples/charts/hello -n demo --gate policy --wait
//
// The example chart is rejected as it is — its image is tagged, not pinned by a digest, and its
// container has no limits — and `troupe release --wait` shows the gate's findings.
//
// Flags beside the ones every troupe service has (--server, --creds, --http-listen for /healthz,
// /readyz and /metrics, --log-level, --subjects-prefix, --otlp-endpoint, …):
//
//	--name NAME                   the gate's name (default policy) [TROUPE_GATE_NAME]
//	--require-digest              image-digest wants a digest (default true); false: only latest is refused [TROUPE_POLICY_REQUIRE_DIGEST]
//	--forbid-loadbalancer-in NS   namespaces, comma-separated, or "*" [TROUPE_POLICY_FORBID_LOADBALANCER_IN]
//
// Its NATS identity is the gate's own, gate-<name> (events/access: access.Gate): it reads
// release.rendered with its durable consumer gate-<name>, reads the bundles, the flows and the
// gate policy, and publishes release.approved and release.rejected on its own subjects only
// (troupe.release.<ns>.<release>.<approved|rejected>.<name>). A verdict published by anyone else
// on another gate's subject counts for nothing, so the credentials of one gate cannot approve
// for another; run two policy gates with different rules under two names, two identities.
// Replicas of one gate share its consumer, and a verdict's event id derives from the revision's
// flow, so a redelivered revision judged again publishes nothing new.
//
// # Why the events SDK
//
// The gate is a few lines over events.NewGate, which does what every gate must get right and
// none should write again: the consumer filtered to release.rendered with acks, backoff and
// dead letters; skipping revisions that do not name the gate, or whose flow ended or deadline
// passed (fencing: a late gate never speaks for a revision nobody waits for); reading and
// decoding the bundle by digest; and publishing a verdict that validates against the catalog's
// schema on the gate's own subject, with an id derived from the flow (a retry is deduplicated by
// the stream) and the revision's correlation and trace carried on. The gate writes only its
// judgement, rules.Check, which is why it can be table-tested on real charts without NATS.
package main
