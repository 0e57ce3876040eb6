// Package history is troupe's history service: it reads every release.* event and keeps each
// release's revisions, current revision and timeline as a view in the troupe-history KV bucket,
// drives rollbacks (by re-publishing a revision's recorded bundle as its release.rendered, and
// asking for one on its own when a request with rollbackOnFailure fails), and answers queries.
//
// Choices:
//   - A view is a fold of the release's events in stream order (Fold, no effects), with the
//     stream sequence of the last event folded: at-least-once delivery folds nothing twice, and
//     Rebuild recomputes every view from the stream with the same function.
//   - A delivered event only triggers the fold: the view is caught up to it by reading the
//     release's events it lacks from the stream (GetMsg with the release's subject filter, in
//     stream order) and stored by compare-and-set on the key's revision (jetstream KV Update and
//     Create), retried when another replica stored it first. So replicas sharing the consumer,
//     deliveries out of order, and redeliveries after a nak or a crash all give the views one
//     history folding the stream alone gives (store.go).
//   - What history does about an event (a rollback's release.rendered, an automatic
//     release.rollback.requested, a refusal) is decided from the view after the fold — on a
//     redelivery too — and published with ids derived from the event: done twice, published once.
//   - Revision numbers are events.Revisions', the numbers the renderer gives: no service mints
//     its own. A rollback mints none.
//   - Views live in JetStream KV, so they replicate with the NATS cluster; queries are a NATS
//     micro service (discoverable like every troupe service) and the same over HTTP JSON.
//   - What a view is, and the queries' requests and replies, are events/historyapi's: a client
//     (the CLI) imports those, not this package and its dependencies.
package history
