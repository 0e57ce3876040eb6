package embedded

import (
	"context"
	"os"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/events"
)

// Dev is an embedded server with its store in a temporary directory, troupe's streams and
// buckets provisioned, and a connection to it: what a benchmark or a tool run needs.
type Dev struct {
	Server *server.Server
	NC     *nats.Conn
	JS     jetstream.JetStream
	dir    string
}

// StartDev starts a Dev; its store is in a new directory under parent ("" for the system's
// temporary directory). Close stops it and removes the store.
func StartDev(ctx context.Context, parent string) (_ *Dev, err error) {
	d := &Dev{}
	if d.dir, err = os.MkdirTemp(parent, "troupe-nats-"); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	if d.Server, err = Start(Options{StoreDir: d.dir}); err != nil {
		return nil, err
	}
	if d.NC, err = nats.Connect(d.Server.ClientURL()); err != nil {
		return nil, err
	}
	if d.JS, err = jetstream.New(d.NC); err != nil {
		return nil, err
	}
	if _, err = events.Provision(ctx, d.JS, events.ProvisionConfig{}); err != nil {
		return nil, err
	}
	return d, nil
}

// Close closes the connection, stops the server and removes its store.
func (d *Dev) Close() {
	if d.NC != nil {
		d.NC.Close()
	}
	if d.Server != nil {
		d.Server.Shutdown()
		d.Server.WaitForShutdown()
	}
	_ = os.RemoveAll(d.dir)
}
