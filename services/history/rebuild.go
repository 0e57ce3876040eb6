package history

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/historyapi"
)

// Rebuild recomputes every view from the events stream, from its first event to its last, and
// replaces what the KV bucket holds with the result (views of releases the stream no longer
// has are deleted). It publishes nothing: what history did about those events is in the stream
// already. Folding is deterministic, so a rebuilt view equals the live one.
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
					v = &historyapi.View{Release: rel.String()}
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
	keys, err := s.kv.ListKeys(ctx)
	if err != nil {
		return 0, err
	}
	for k := range keys.Keys() {
		if rel, err := releaseOfKey(k); err == nil && views[rel] == nil {
			_ = s.kv.Delete(ctx, k)
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

func nextWithin(msgs jetstream.MessagesContext, d time.Duration) (jetstream.Msg, error) {
	t := time.AfterFunc(d, msgs.Stop)
	defer t.Stop()
	return msgs.Next()
}
