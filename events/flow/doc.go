// Package flow follows and traces a release's flows — the events one request (or rollback, or
// uninstall) sets off through the services — as they are on the stream.
//
//   - Watch reads a release's events from a stream sequence on; Follow folds the events of one
//     flow into its Outcome as they arrive (ready, failed, superseded, diffed, uninstalled, or an
//     automatic rollback after a failure), reporting each Step for people to see, and saying which
//     service it waits for when the flow goes quiet (WaitsFor).
//   - Read reads every event of a release; ReadTrace and NewTrace rebuild one revision's way
//     through the services from them: every event, each stage's time, where it stopped.
//
// The folds are pure (NewTrace, and Follow's fold of each event) and table-tested without NATS;
// what people see of them — columns, colours, JSON — is the caller's. The outcomes speak
// history's words (events/historyapi states) and the catalog's (events.EndsFlow, PublishedBy),
// so `troupe release --wait`, `troupe trace` and `troupe history` agree.
package flow
