// Package serve runs troupe's services as processes. Group runs several services in one
// process: one NATS connection, one HTTP server with /healthz, /readyz and /metrics beside the
// services' own handlers, started together and shut down in order (readiness false, services
// drained, NATS drained, HTTP stopped). Run and Main are a service command built on it: the
// flags every service has, the connection, provisioning, tracing (events/tracing), and a Group
// of one; `troupe dev` runs its services in a Group too.
package serve
