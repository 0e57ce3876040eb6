package history

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/historyapi"
)

// How a view is kept right by any number of replicas sharing the consumer:
//
//   - A delivered event is a trigger. The replica reads the release's stored view, folds the
//     release's events the view has not folded — read from the stream, in stream order — up to
//     the delivered one, and stores the result by compare-and-set on the key's revision. A view
//     is therefore always the fold of a prefix of its release's events in stream order, whoever
//     handled which delivery and in what order, and equals what one history (or Rebuild) makes.
//   - An event handled out of order (another replica had a later one) or redelivered after a nak
//     or a crash is not lost: the handler of the later event folded it first. Its own delivery
//     finds it folded and only reacts.
//   - Two replicas folding the same release at once compute the same view; the one whose
//     compare-and-set loses reads the other's and, finding it far enough, stores nothing.
//   - The stream is read through its leader (the events stream allows no direct get), so every
//     event stored before the delivered one is seen.

// maxAttempts bounds how often one update of a view is tried after another replica stored the
// view in between; then the event is nakked and tried again later.
const maxAttempts = 16

// advance brings rel's stored view up to stream sequence seq, where e (an event of rel) is
// stored, and returns it. Stored views at or past seq are returned as they are. bad is the
// terminal error folding e failed with (the view moved past it, as Rebuild moves past it).
// Revisions the view no longer keeps have their bundles deleted once the view is stored.
func (s *Service) advance(ctx context.Context, rel events.Release, e event.Event, seq uint64) (v *historyapi.View, bad error, err error) {
	var dropped []*historyapi.Revision
	v, err = s.update(ctx, rel, func(v *historyapi.View) (bool, error) {
		dropped, bad = nil, nil
		if v.Sequence >= seq {
			return false, nil // folded already: before a redelivery, or by a replica catching up
		}
		var err error
		if dropped, err = s.foldStream(ctx, rel, v, seq); err != nil {
			return false, err
		}
		if err := s.fold(ctx, v, e, seq); err != nil {
			if !events.IsTerminal(err) {
				return false, err
			}
			bad = err
		}
		dropped = append(dropped, Prune(v, s.opts.Keep)...)
		return true, nil
	})
	if err != nil {
		return nil, nil, err
	}
	s.deleteBundles(ctx, v, dropped)
	return v, bad, nil
}

// foldStream folds into v the events of rel stored after v.Sequence and before until, read from
// the events stream in its order, pruning after each as Rebuild does; it returns the revisions
// pruned. Events that do not decode were dead-lettered and are skipped, and so are events whose
// payload cannot be folded: Rebuild skips the same.
func (s *Service) foldStream(ctx context.Context, rel events.Release, v *historyapi.View, until uint64) ([]*historyapi.Revision, error) {
	filter, err := s.opts.Names.ReleaseFilter(rel)
	if err != nil {
		return nil, err
	}
	var dropped []*historyapi.Revision
	for from := v.Sequence + 1; from < until; {
		m, err := s.stream.GetMsg(ctx, from, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("history of %s: read stream at %d: %w", rel, from, err)
		}
		if m.Sequence >= until {
			break
		}
		from = m.Sequence + 1
		e, err := s.opts.Names.Decode(m.Subject, m.Header, m.Data)
		if err != nil {
			continue
		}
		if err := s.fold(ctx, v, e, m.Sequence); err != nil && !events.IsTerminal(err) {
			return nil, err
		}
		dropped = append(dropped, Prune(v, s.opts.Keep)...)
	}
	return dropped, nil
}

// update stores the view change makes of rel's stored view (of a new, empty one when there is
// none) by compare-and-set on the key's revision, and returns the view stored. change reports
// whether it changed the view; when not, nothing is stored. When another replica stored the view
// in between, update reads that one and asks change again, up to maxAttempts times; then it
// returns an error (the event is nakked and tried again later).
func (s *Service) update(ctx context.Context, rel events.Release, change func(*historyapi.View) (bool, error)) (*historyapi.View, error) {
	for attempt := 1; ; attempt++ {
		v, revision, err := s.load(ctx, rel)
		if err != nil {
			return nil, err
		}
		changed, err := change(v)
		if err != nil || !changed {
			return v, err
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("history of %s: %w", rel, err)
		}
		if revision == 0 {
			_, err = s.kv.Create(ctx, key(rel), b)
		} else {
			_, err = s.kv.Update(ctx, key(rel), b, revision)
		}
		switch {
		case err == nil:
			return v, nil
		case !lostRace(err):
			return nil, fmt.Errorf("history of %s: %w", rel, err)
		case attempt == maxAttempts:
			return nil, fmt.Errorf("history of %s: stored by another replica first %d times in a row: %w", rel, attempt, err)
		}
		// A replica stored it first (or the view was read from a replica of the bucket that had
		// not seen the last write yet): read it again, after a pause that grows.
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(attempt) * 5 * time.Millisecond):
		}
	}
}

// load returns rel's stored view and the key's revision, or a new view and 0. A stored view that
// does not decode is returned as a new view (with the key's revision): folded again from the
// stream, it replaces the unreadable one.
func (s *Service) load(ctx context.Context, rel events.Release) (*historyapi.View, uint64, error) {
	entry, err := s.kv.Get(ctx, key(rel))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return &historyapi.View{Release: rel.String()}, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("history of %s: %w", rel, err)
	}
	var v historyapi.View
	if err := json.Unmarshal(entry.Value(), &v); err != nil {
		return &historyapi.View{Release: rel.String()}, entry.Revision(), nil
	}
	return &v, entry.Revision(), nil
}

// lostRace says whether a compare-and-set failed because the key is not at the revision read.
func lostRace(err error) bool { return events.IsCASConflict(err) }
