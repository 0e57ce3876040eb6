// Package ui is troupe's web UI: the releases, a release's revisions with diffs and values, a
// revision's timeline as a swimlane (one lane per service, as `troupe trace`), the choreography
// graph from live discovery, and the dead letters — served by the history service (on a
// cluster) and by `troupe dev`, at Prefix.
//
// Everything it shows comes from the stream and from history, as the CLI's views do: history's
// queries (Options.Query: the views, diffs with Secret data redacted, values), the events
// stream (events/flow: the trace), the services' own descriptions (events/graph), the
// dead-letter stream. Pages are live without polling: one ordered consumer per server on the
// events and the dead letters feeds every open page through Server-Sent Events, and a page asks
// again for what a notice says changed (a release's view waits, briefly, until history has
// folded that very event: ?atLeast=).
//
// Buttons (rollback, uninstall, re-drive) publish the same requests as the CLI, over a NATS
// connection with the cli identity's rights (Options.Requests), so NATS holds the page to the
// CLI's rules; without one the UI is read-only and says why. A button's POST must come from the
// UI's own pages: a JSON body with an X-Troupe-UI header, which a form or a script on another
// site cannot send without the browser asking first (nothing here answers that), and
// Sec-Fetch-Site/Origin are checked where the browser sends them. Who may open the pages at all
// is the history API's rule (history.Guard): without a token, loopback names only (no DNS
// rebinding: history.LoopbackOnly); with one, the token, which a sign-in page trades for an
// HttpOnly, SameSite=Strict cookie holding a keyed hash of it.
//
// Re-drive is events.Names.Redrive's: only a request its handler gave up on, once, and never
// over a newer request of the release.
//
// Why no framework and no npm build: the pages are a few hundred lines of plain ES modules and
// CSS embedded with go:embed, loaded from nowhere else (the Content-Security-Policy says so), so
// the binary is the whole UI and a build is reproducible by construction; the diagrams are SVG
// drawn by the code (the timeline in the page, the graph by events/graph), nothing hand-drawn.
// The tests drive headless Chromium with chromedp (test/e2e/ui_test.go): the Chrome DevTools
// Protocol from Go, with no Node toolchain next to Go's.
package ui
