// Package historyapi is what the history service and its clients (the troupe CLI, a UI, any
// tool) share: the query subjects and endpoints, the requests and replies, and the words of a
// release's history — revision states, timeline actions, how a source is described.
//
// It holds types and words only. How a view is folded from the events, and everything the
// service does about it, stays in the service (services/history); this package imports nothing
// but events and the standard library, so a client links none of the service's dependencies.
package historyapi
