package history

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/historyapi"
)

// Rebuild recomputes views from the events stream, from its first event to its last, and
// returns how many releases it folded events of. A release whose whole history the stream still
// holds (its revision 1 request is in it) is rebuilt from scratch; folding is deterministic, so
// its rebuilt view equals the live one. A release the stream aged older events of out keeps the
// view it has, with what the stream holds past it folded on; a release the stream holds nothing
// of (quiet for longer than its max age) keeps its view untouched. It publishes nothing: what
// history did about those events is in the stream already.
func (s *Service) Rebuild(ctx context.Context) (int, error) {
	stream, err := s.js.Stream(ctx, s.opts.Names.Stream())
	if err != nil {
		return 0, err
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return 0, err
	}
	views := map[events.Release]*historyapi.View{}
	start := func(rel events.Release) (*historyapi.View, error) {
		have, err := s.View(ctx, rel)
		if err != nil && !errors.Is(err, ErrUnknownRelease) {
			return nil, err
		}
		first, err := s.revisions.First(ctx, rel)
		if err != nil {
			return nil, err
		}
		return rebuildFrom(rel, have, first, info.State.FirstSeq), nil
	}
	if last := info.State.LastSeq; last > 0 && info.State.Msgs > 0 {
		c, err := s.js.OrderedConsumer(ctx, s.opts.Names.Stream(), jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{s.opts.Names.ReleaseSubjects()}, DeliverPolicy: jetstream.DeliverAllPolicy})
		if err != nil {
			return 0, err
		}
		msgs, err := c.Messages()
		if err != nil {
			return 0, err
		}
		defer msgs.Stop()
		for {
			msg, err := nextWithin(msgs, 30*time.Second)
			if err != nil {
				return 0, fmt.Errorf("rebuild: reading the stream: %w", err)
			}
			md, err := msg.Metadata()
			if err != nil {
				return 0, err
			}
			if e, err := s.opts.Names.Decode(msg.Subject(), msg.Headers(), msg.Data()); err == nil {
				rel, _ := events.ReleaseOf(e)
				v := views[rel]
				if v == nil {
					if v, err = start(rel); err != nil {
						return 0, fmt.Errorf("rebuild %s: %w", rel, err)
					}
					views[rel] = v
				}
				if err := s.fold(ctx, v, e, md.Sequence.Stream); err != nil && !events.IsTerminal(err) {
					return 0, err
				}
				Prune(v, s.opts.Keep)
			}
			if md.Sequence.Stream >= last {
				break
			}
		}
	}
	for rel, v := range views {
		if err := s.replace(ctx, rel, v); err != nil {
			return 0, err
		}
	}
	return len(views), nil
}

// replace stores rebuilt as rel's view, by compare-and-set: a view a live replica stored with
// events after the rebuild's last one is not set back; those events are folded into rebuilt
// first. The bundles of revisions that drops are left alone (the live replica deleted them).
func (s *Service) replace(ctx context.Context, rel events.Release, rebuilt *historyapi.View) error {
	b, err := json.Marshal(rebuilt)
	if err != nil {
		return err
	}
	_, err = s.update(ctx, rel, func(v *historyapi.View) (bool, error) {
		stored := v.Sequence
		*v = historyapi.View{}
		if err := json.Unmarshal(b, v); err != nil {
			return false, err
		}
		if stored > v.Sequence {
			if _, err := s.foldStream(ctx, rel, v, stored+1); err != nil {
				return false, err
			}
		}
		return true, nil
	})
	return err
}

// rebuildFrom decides the view a release's rebuild folds the stream onto: nothing, when the
// stream holds the release's whole history — its first request (firstRequest, 0 when none was
// numbered) is at or after the stream's first sequence, or the stream never lost an event —
// and else the view history has (have, nil if none), since folding what the stream still holds
// onto nothing would lose the revisions it aged out. Fold skips what have already holds.
func rebuildFrom(rel events.Release, have *historyapi.View, firstRequest, streamFirst uint64) *historyapi.View {
	whole := streamFirst <= 1 || firstRequest != 0 && firstRequest >= streamFirst
	if have == nil || whole {
		return &historyapi.View{Release: rel.String()}
	}
	return have
}

func nextWithin(msgs jetstream.MessagesContext, d time.Duration) (jetstream.Msg, error) {
	t := time.AfterFunc(d, msgs.Stop)
	defer t.Stop()
	return msgs.Next()
}
