package natstest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/access"
	"github.com/troupe-dev/troupe/events/embedded"
)

// Auth is an embedded NATS with authentication on, as `troupe dev` runs it.
type Auth struct {
	URL string
	// Creds is each identity's credentials file (events/access), by name.
	Creds map[string]string
	// Dir holds the store (creds/: its keys and the credentials; nats/: the server's data).
	Dir string
}

// StartAuth starts an embedded NATS JetStream with authentication on, as `troupe dev` does: a
// new operator and account in a temporary directory, one user per identity of events/access with
// its permissions. The admin provisions the streams and buckets; the server stops when the test
// ends.
func StartAuth(t testing.TB) Auth {
	t.Helper()
	dir := t.TempDir()
	auth, err := access.LoadOrCreate(filepath.Join(dir, "creds"))
	if err != nil {
		t.Fatal(err)
	}
	creds, err := auth.WriteCreds(filepath.Join(dir, "creds"), events.Names{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := embedded.Start(embedded.Options{StoreDir: filepath.Join(dir, "nats"), Auth: auth})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	a := Auth{URL: s.ClientURL(), Creds: creds, Dir: dir}
	nc, err := events.ConnOptions{Server: a.URL, CredsFile: creds[access.Admin]}.Connect("natstest-admin")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := events.Provision(t.Context(), js, events.ProvisionConfig{}); err != nil {
		t.Fatal(err)
	}
	return a
}

// GateCreds writes the credentials of the identity of the gate named gate (access.Gate: not in
// Creds, gates are the operator's), signed by the same keys, and returns the file's path.
func (a Auth) GateCreds(t testing.TB, gate string) string {
	t.Helper()
	dir := filepath.Join(a.Dir, "creds")
	auth, err := access.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	id, err := access.Gate(gate)
	if err != nil {
		t.Fatal(err)
	}
	b, err := auth.Creds(id, events.Names{})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, id.Name+".creds")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
