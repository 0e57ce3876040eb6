package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/nats-io/nats.go/jetstream"
)

// streamSeqs is every stream's last sequence: what was written to each, counted from 0 (a KV
// bucket's and an object store's are streams too; a delete or purge marker is a write).
func streamSeqs(ctx context.Context, js jetstream.JetStream) (map[string]uint64, error) {
	out := map[string]uint64{}
	l := js.ListStreams(ctx)
	for info := range l.Info() {
		out[info.Config.Name] = info.State.LastSeq
	}
	return out, l.Err()
}

// reportWrites prints what troupe wrote to JetStream over the phases, per stream and per
// release operation (n releases × the phases).
func reportWrites(w io.Writer, r *result) {
	if r == nil || len(r.writes) == 0 {
		return
	}
	ops := float64(r.n * len(r.phases))
	fmt.Fprintf(w, "\ntroupe's JetStream writes over the phases, %d releases (messages stored, KV and object-store markers included)\n\n", r.n)
	fmt.Fprintln(w, "| stream | writes | per release operation |")
	fmt.Fprintln(w, "|---|---:|---:|")
	var total uint64
	for _, s := range slices.Sorted(maps.Keys(r.writes)) {
		total += r.writes[s]
		fmt.Fprintf(w, "| %s | %d | %.1f |\n", s, r.writes[s], float64(r.writes[s])/ops)
	}
	fmt.Fprintf(w, "| **all** | %d | %.1f |\n", total, float64(total)/ops)
}
