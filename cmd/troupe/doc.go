// Command troupe is troupe's CLI: `troupe dev` runs an embedded NATS JetStream with troupe's
// streams and every troupe service in one process; `troupe publish` and `troupe tail` put events
// on the stream and read them back.
//
// The CLI is built on cobra, the command library of helm, flux and kubectl, so verbs, flags and
// help read the way users of those tools expect. Every command takes --server (TROUPE_SERVER)
// and the other NATS connection flags of events.ConnOptions, so it works against any NATS
// deployment, not only `troupe dev`.
package main
