package applier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/services/applier/apply"
)

// Record is what a release's applied revision left in the cluster, kept in the KVInventory
// bucket: under <namespace>.<name> the release's current one, under <namespace>.<name>.<revision>
// each revision's. Every replica reads it; nothing about a release lives in memory.
type Record struct {
	Release  string `json:"release"`
	Revision int    `json:"revision"`
	Bundle   string `json:"bundle"`
	// Cause is the id of the release.rendered this revision was applied for.
	Cause     string         `json:"cause"`
	AppliedAt time.Time      `json:"appliedAt"`
	Objects   []apply.Object `json:"objects"`
	// Applied is the release.applied payload published, published again for a redelivery.
	Applied events.Applied `json:"applied"`
	// Orphans are objects a failed revision applied that Objects does not hold: the next
	// revision prunes them too.
	Orphans []apply.Object `json:"orphans,omitempty"`
}

// Previous is what the next revision starts from: the objects to keep or prune.
func (r *Record) Previous() []apply.Object {
	if r == nil {
		return nil
	}
	out := append([]apply.Object(nil), r.Objects...)
	seen := map[events.ObjectRef]bool{}
	for _, o := range out {
		seen[o.ObjectRef] = true
	}
	for _, o := range r.Orphans {
		if !seen[o.ObjectRef] {
			out = append(out, o)
		}
	}
	return out
}

type inventory struct{ kv jetstream.KeyValue }

func openInventory(ctx context.Context, js jetstream.JetStream, names events.Names) (*inventory, error) {
	bucket := names.KV(events.KVInventory)
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("applier: kv %s: %w", bucket, err)
	}
	return &inventory{kv: kv}, nil
}

func key(rel events.Release) string { return rel.Namespace + "." + rel.Name }

// current returns the release's current record, nil when it has none.
func (inv *inventory) current(ctx context.Context, rel events.Release) (*Record, error) {
	e, err := inv.kv.Get(ctx, key(rel))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("inventory of %s: %w", rel, err)
	}
	var r Record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return nil, fmt.Errorf("inventory of %s: %w", rel, err)
	}
	return &r, nil
}

// put records r as the release's current revision, and as its revision's.
func (inv *inventory) put(ctx context.Context, rel events.Release, r *Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if _, err := inv.kv.Put(ctx, key(rel)+"."+strconv.Itoa(r.Revision), b); err != nil {
		return fmt.Errorf("inventory of %s: %w", rel, err)
	}
	return inv.setCurrent(ctx, rel, b)
}

func (inv *inventory) setCurrent(ctx context.Context, rel events.Release, b []byte) error {
	if _, err := inv.kv.Put(ctx, key(rel), b); err != nil {
		return fmt.Errorf("inventory of %s: %w", rel, err)
	}
	return nil
}

// orphans adds what a failed revision applied, beyond the current record's objects, to the
// record's orphans (a release with no record gets one of revision 0 holding only them).
func (inv *inventory) orphans(ctx context.Context, rel events.Release, cur *Record, applied []apply.Object) error {
	r := Record{Release: rel.String()}
	if cur != nil {
		r = *cur
	}
	have := map[events.ObjectRef]bool{}
	for _, o := range r.Previous() {
		have[o.ObjectRef] = true
	}
	added := false
	for _, o := range applied {
		if !have[o.ObjectRef] {
			r.Orphans = append(r.Orphans, o)
			added = true
		}
	}
	if !added {
		return nil
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return inv.setCurrent(ctx, rel, b)
}

// remove forgets the release's current record (uninstalled); revision records stay.
func (inv *inventory) remove(ctx context.Context, rel events.Release) error {
	if err := inv.kv.Delete(ctx, key(rel)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("inventory of %s: %w", rel, err)
	}
	return nil
}
