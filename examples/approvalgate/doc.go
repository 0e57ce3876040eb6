// Command approvalgate is a troupe gate a person drives: every rendered revision that names it
// waits until someone approves or rejects it with `troupe approve` or `troupe reject`, and only
// then may the applier apply it (or must it fail it, at stage gate, for the person's reason). A
// revision nobody decides on fails at its deadline, naming the gate that gave no verdict.
//
// # How it joins
//
// A release asks for the gate by name — `troupe release … --gate approval` (its options.gates)
// — or a namespace's policy requires it, so that no requester can skip it: `troupe gate require
// approval -n prod`. For each release.rendered naming it the gate logs "waiting for approval"
// with the release and revision, and publishes nothing. A person then asks it for a decision:
//
//	troupe approve hello -n prod [--revision N] [--reason "change 1234 reviewed"] [--by alice]
//	troupe reject hello -n prod --reason "not during the freeze"
//
// The CLI sends an events.GateDecision request to the gate's decision subject
// (events.Names.GateDecisionSubject: troupe.gate.<name>.decide); the gate finds the revision —
// the newest that names it, or --revision N — checks that its flow is still open, and publishes
// release.approved or release.rejected for that revision and bundle digest, recording who
// decided (By) and why (the message), then answers with the verdict or why it refused: a
// rejection without a reason, a revision that does not name the gate or already ended, a
// decision by someone not among --approvers.
//
// A dry run applies nothing and waits for no one: the gate approves it at once, with reason
// dry_run and the message "dry run: a person would have to approve this revision", which the
// dry run's release.diffed reports. A rollback is a revision like any other and waits for a
// person, unless the namespace's policy trusts earlier approvals of the same bundle
// (`troupe gate require approval -n NS --trust-approvals`), which the applier decides.
//
// # Running it
//
//	troupe gate creds approval     # the gate's own identity: .troupe/creds/gate-approval.creds
//	go run ./examples/approvalgate --creds .troupe/creds/gate-approval.creds --http-listen 127.0.0.1:8083 \
//	  --approvers alice,bob
//
// Flags beside the ones every troupe service has (--server, --creds, --http-listen for /healthz,
// /readyz and /metrics, --log-level, --subjects-prefix, --otlp-endpoint, …):
//
//	--name NAME            the gate's name (default approval) [TROUPE_GATE_NAME]
//	--approvers A,B        the only names a decision may be by (default: anyone who may ask) [TROUPE_APPROVERS]
//
// Two identities take part. The gate runs as its own, gate-<name> (events/access: access.Gate):
// it reads release.rendered with its durable consumer gate-<name>, reads the bundles, the flows
// and the gate policy, answers on its own decision subject, and publishes release.approved and
// release.rejected on its own verdict subjects only — a verdict on another gate's subject counts
// for nothing. The person asks as the approver identity (troupe dev: approver.creds), which may
// ask any gate for a decision and publishes nothing in the catalog. The name a decision is by is
// the one the person gives (troupe approve --by, default $USER): --approvers narrows who the gate
// listens to among those holding the approver's credentials, it does not authenticate them. For
// one identity per person, give each their own credentials with the approver's rights.
//
// Several replicas of the gate share its consumer and its decision subject (a queue group): one
// of them answers each decision. The gate keeps nothing in memory: what waits is read from the
// stream when a person decides, so a restart loses nothing.
//
// # Why the events SDK
//
// events.NewGate does what every gate must get right: the consumer of release.rendered with
// acks, backoff and dead letters; skipping revisions that do not name the gate or whose flow
// ended or deadline passed; and, with GateConfig.Decisions, the request/reply a person decides
// through — finding the revision in the stream, refusing a revision that does not wait for the
// gate or already ended, and publishing a verdict valid against the catalog's schema, on the
// gate's own subject, derived from the revision's flow so that it carries its correlation and
// trace. This program is only its judgement (wait, or approve a dry run) and its check of who
// decides.
package main
