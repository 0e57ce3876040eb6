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
// each revision's. Every replica reads it; nothing about a release lives in memory. The current
// record changes only by compare-and-set (inventory.update).
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
	// Intent is what revisions not recorded since (killed, failed, or still at work) were about
	// to apply, recorded before they touched the cluster: the next revision prunes what of it
	// the bundle lacks, an uninstall deletes it. A recorded revision clears it.
	Intent *Intent `json:"intent,omitempty"`
	// Uninstalled is the tombstone an uninstall leaves: the release has no objects since, and a
	// revision requested before the uninstall is not applied. A recorded revision clears it.
	Uninstalled *Tombstone `json:"uninstalled,omitempty"`
}

// Intent is what revisions were about to apply.
type Intent struct {
	Revision int                `json:"revision"` // the latest of them
	Objects  []events.ObjectRef `json:"objects"`
}

// Tombstone is the uninstall a release's current record ends with.
type Tombstone struct {
	// Sequence is the stream sequence of the release.uninstall.requested.
	Sequence uint64 `json:"sequence"`
	// Request is its id.
	Request string    `json:"request"`
	At      time.Time `json:"at"`
	// Bundle is the uninstalled revision's, whose post-delete hooks run after the tombstone is
	// down (again, for a redelivered uninstall).
	Bundle string `json:"bundle,omitempty"`
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

// Pending is what the record's intent holds beyond Previous: objects that may be in the cluster
// though no recorded revision applied them.
func (r *Record) Pending() []events.ObjectRef {
	if r == nil || r.Intent == nil {
		return nil
	}
	seen := map[events.ObjectRef]bool{}
	for _, o := range r.Previous() {
		seen[o.ObjectRef] = true
	}
	var out []events.ObjectRef
	for _, ref := range r.Intent.Objects {
		if !seen[ref] {
			seen[ref] = true
			out = append(out, ref)
		}
	}
	return out
}

// All is every object the release may have in the cluster: Previous, then Pending.
func (r *Record) All() []events.ObjectRef {
	var out []events.ObjectRef
	for _, o := range r.Previous() {
		out = append(out, o.ObjectRef)
	}
	return append(out, r.Pending()...)
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
	r, _, err := inv.get(ctx, rel)
	return r, err
}

// get returns the current record and the key's revision (0: no record).
func (inv *inventory) get(ctx context.Context, rel events.Release) (*Record, uint64, error) {
	e, err := inv.kv.Get(ctx, key(rel))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("inventory of %s: %w", rel, err)
	}
	var r Record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return nil, 0, fmt.Errorf("inventory of %s: %w", rel, err)
	}
	return &r, e.Revision(), nil
}

// casAttempts bounds update's compare-and-set retries. The release's lease makes one writer the
// rule; a second one is a holder whose lease expired while it worked.
const casAttempts = 10

// update changes the release's current record by compare-and-set: change gets the record (nil
// when there is none) and returns the new one, or nil to leave it as it is. A set that loses to
// another writer reads again and calls change again, at most casAttempts times.
func (inv *inventory) update(ctx context.Context, rel events.Release, change func(*Record) *Record) error {
	for range casAttempts {
		cur, rev, err := inv.get(ctx, rel)
		if err != nil {
			return err
		}
		next := change(cur)
		if next == nil {
			return nil
		}
		b, err := json.Marshal(next)
		if err != nil {
			return err
		}
		if rev == 0 {
			_, err = inv.kv.Create(ctx, key(rel), b)
		} else {
			_, err = inv.kv.Update(ctx, key(rel), b, rev)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !isWrongLastSequence(err) {
			return fmt.Errorf("inventory of %s: %w", rel, err)
		}
	}
	return fmt.Errorf("inventory of %s: changed by another writer %d times in a row", rel, casAttempts)
}

func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// intend records that revision is about to apply objects: added to the current record's intent
// (a release with no record gets one of revision 0 holding only it).
func (inv *inventory) intend(ctx context.Context, rel events.Release, revision int, objects []events.ObjectRef) error {
	return inv.update(ctx, rel, func(cur *Record) *Record {
		r := Record{Release: rel.String()}
		if cur != nil {
			r = *cur
		}
		in := &Intent{Revision: revision}
		seen := map[events.ObjectRef]bool{}
		if r.Intent != nil {
			in.Revision = max(revision, r.Intent.Revision)
			for _, ref := range r.Intent.Objects {
				seen[ref] = true
				in.Objects = append(in.Objects, ref)
			}
		}
		added := r.Intent == nil
		for _, ref := range objects {
			if !seen[ref] {
				seen[ref] = true
				in.Objects = append(in.Objects, ref)
				added = true
			}
		}
		if !added && in.Revision == r.Intent.Revision {
			return nil
		}
		r.Intent = in
		return &r
	})
}

// put records r as the release's current revision, and as its revision's: what it replaces
// (orphans, intent, a tombstone) is gone, pruned or deleted by the revision.
func (inv *inventory) put(ctx context.Context, rel events.Release, r *Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if _, err := inv.kv.Put(ctx, key(rel)+"."+strconv.Itoa(r.Revision), b); err != nil {
		return fmt.Errorf("inventory of %s: %w", rel, err)
	}
	return inv.update(ctx, rel, func(*Record) *Record { return r })
}

// orphans adds what a failed revision applied, beyond the current record's objects, to the
// record's orphans (a release with no record gets one of revision 0 holding only them).
func (inv *inventory) orphans(ctx context.Context, rel events.Release, applied []apply.Object) error {
	return inv.update(ctx, rel, func(cur *Record) *Record {
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
		return &r
	})
}

// uninstalled replaces the release's current record by a tombstone: no objects, and the
// uninstall (its stream sequence and id) that a revision requested earlier must not undo. Revision
// records stay.
func (inv *inventory) uninstalled(ctx context.Context, rel events.Release, t Tombstone) error {
	return inv.update(ctx, rel, func(cur *Record) *Record {
		if cur != nil && cur.Uninstalled != nil && cur.Uninstalled.Sequence >= t.Sequence && len(cur.All()) == 0 {
			return nil // a redelivery, or a later uninstall's
		}
		return &Record{Release: rel.String(), Uninstalled: &t}
	})
}
