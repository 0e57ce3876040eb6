// Package access is who may do what on troupe's NATS: one table of identities (Table) — each
// service, the CLI, a read-only viewer, a template for users' own subscribers, and an admin — and
// the NATS permissions each gets (Permissions), down to the JetStream API subjects of the streams,
// KV buckets and object stores it needs. `troupe dev` signs one user per identity with its own
// operator and account (Authority) and writes their credentials files; `troupe identities -o
// json` prints the same permissions for a deployment to install.
//
// The table is the catalog's "who publishes what" made enforceable: only the renderer and history
// publish release.rendered, only the applier release.applied, the CLI only the three requests;
// only the renderer and history write to the bundles store, and the applier applies only what the
// renderer signed (BundleWriters). A reader's consumers can never be the services' durable ones,
// so no identity but the applier can take, ack or delete the applier's deliveries. A service
// answers requests on inboxes only: NATS's response permission would let a request name any
// reply subject (a JetStream API one) for the service to publish to with its rights.
//
// Credentials are NATS's own decentralised JWTs (github.com/nats-io/jwt/v2, keys from
// github.com/nats-io/nkeys): the format nats.go's UserCredentials, the nats CLI and every NATS
// client read, checked by the server itself, with no callout service of troupe's to run or trust.
// The alternative, users and permissions in a server config file, would need a config reload per
// change and passwords or nkeys handed out separately from their permissions; a signed user JWT
// carries its permissions with it, so a deployment hands a service one file.
//
// Each identity's replies come to its own inbox prefix (_INBOX.<identity>, InboxPrefix), and it
// may subscribe only there: one identity never reads the answers another's requests get (a
// history query's manifests, a KV read).
package access
