// Package access is who may do what on troupe's NATS: one table of identities (Table) — each
// service, the CLI, a read-only viewer, a template for users' own subscribers, and an admin — and
// the NATS permissions each gets (Permissions), down to the JetStream API subjects of the streams,
// KV buckets and object stores it needs. `troupe dev` signs one user per identity with its own
// operator and account (Authority) and writes their credentials files; deploy/ installs the same
// permissions on a cluster.
//
// The table is the catalog's "who publishes what" made enforceable: only the renderer and history
// publish release.rendered, only the applier release.applied, the CLI only the three requests;
// only the renderer and history write the bundles a release.rendered names. A reader's consumers
// can never be the services' durable ones, so no identity but the applier can take, ack or delete
// the applier's deliveries.
//
// Credentials are NATS's own decentralised JWTs (github.com/nats-io/jwt/v2, keys from
// github.com/nats-io/nkeys): the format nats.go's UserCredentials, the nats CLI and every NATS
// client read, checked by the server itself, with no callout service of troupe's to run or trust.
// The alternative, users and permissions in a server config file, would need a config reload per
// change and passwords or nkeys handed out separately from their permissions; a signed user JWT
// carries its permissions with it, so deploy/ can hand a service one file.
//
// Each identity's replies come to its own inbox prefix (_INBOX.<identity>, InboxPrefix), and it
// may subscribe only there: one identity never reads the answers another's requests get (a
// history query's manifests, a KV read).
package access
