package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/events"
)

// lookup reads the facts of a flow from the events stream: what the subscriber identity may read
// (the stream, and the revisions in KVReleases). It keeps no state, so every replica of the
// bridge answers the same, and a restart loses nothing.
type lookup struct {
	js        jetstream.JetStream
	names     events.Names
	stream    jetstream.Stream
	revisions *events.Revisions
}

func newLookup(ctx context.Context, js jetstream.JetStream, names events.Names) (*lookup, error) {
	s, err := js.Stream(ctx, names.Stream())
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", names.Stream(), err)
	}
	rv, err := events.NewRevisions(ctx, js, names)
	if err != nil {
		return nil, err
	}
	return &lookup{js: js, names: names, stream: s, revisions: rv}, nil
}

// renderSkew is how far before its request time a flow's events are looked for: the request
// time is the requester's clock, the stream's timestamps the server's.
const renderSkew = time.Minute

// facts returns the facts of e, the event at stream sequence seq: the flow's release.rendered
// (for a ready revision) and whether the release was live before it.
func (l *lookup) facts(ctx context.Context, e event.Event, seq uint64) (facts, error) {
	var f facts
	r, err := events.ReleaseOf(e)
	if err != nil {
		return f, err
	}
	if e.Type() == events.TypeReady {
		rendered, err := l.rendered(ctx, r, flowOf(e), flowStart(e), seq)
		if err != nil {
			return f, err
		}
		if rendered != nil {
			f.Rollback, f.Chart, f.Bundle = rendered.Rollback, rendered.Chart, rendered.Bundle
		}
	}
	if f.Live, err = l.live(ctx, r, seq); err != nil {
		return f, err
	}
	return f, nil
}

// flowStart is when to look for e's flow's events from: its request time (else e's time, less the
// longest a flow may take), less renderSkew.
func flowStart(e event.Event) time.Time {
	start := events.RequestTime(e)
	if start.IsZero() || start.After(e.Time()) {
		start = e.Time().Add(-events.MaxTimeout)
	}
	return start.Add(-renderSkew)
}

// rendered returns the last release.rendered of r's flow corr stored from time start to before
// stream sequence until; nil when there is none (it aged out of the stream).
func (l *lookup) rendered(ctx context.Context, r events.Release, corr string, start time.Time, until uint64) (*events.Rendered, error) {
	subject, err := l.names.Subject(r, events.TypeRendered)
	if err != nil {
		return nil, err
	}
	cons, err := l.js.OrderedConsumer(ctx, l.names.Stream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject}, DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &start,
	})
	if err != nil {
		return nil, fmt.Errorf("render of %s: %w", r, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("render of %s: %w", r, err)
	}
	// An ordered consumer is ephemeral: gone once idle, and deleted here at once.
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = l.js.DeleteConsumer(dctx, l.names.Stream(), info.Name)
	}()
	if info.NumPending == 0 {
		return nil, nil
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("render of %s: %w", r, err)
	}
	defer it.Stop()
	var found *events.Rendered
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("render of %s: %w", r, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return nil, err
		}
		if md.Sequence.Stream >= until {
			return found, nil
		}
		if e, err := l.names.Decode(msg.Subject(), msg.Headers(), msg.Data()); err == nil && flowOf(e) == corr {
			if p, err := events.Data[events.Rendered](e); err == nil {
				found = p
			}
		}
		if md.NumPending == 0 {
			return found, nil
		}
	}
}

// live reports whether release r had a ready revision before stream sequence seq, with no
// release.uninstalled between them. The stream keeps events for its max age only: when r's first
// request is older than the stream's first event, and the stream holds no ready revision of r,
// r is taken to be live (a release that old was most likely deployed in the part that aged out).
func (l *lookup) live(ctx context.Context, r events.Release, seq uint64) (bool, error) {
	uninstalled, err := l.lastBefore(ctx, r, events.TypeUninstalled, seq)
	if err != nil {
		return false, err
	}
	ready, err := l.names.Subject(r, events.TypeReady)
	if err != nil {
		return false, err
	}
	m, err := l.stream.GetMsg(ctx, uninstalled+1, jetstream.WithGetMsgSubject(ready))
	switch {
	case err == nil && m.Sequence < seq:
		return true, nil
	case err != nil && !errors.Is(err, jetstream.ErrMsgNotFound):
		return false, fmt.Errorf("ready revisions of %s: %w", r, err)
	case uninstalled > 0:
		return false, nil // uninstalled, and not ready since
	}
	first, err := l.revisions.First(ctx, r)
	if err != nil || first == 0 {
		return false, err
	}
	info, err := l.stream.Info(ctx)
	if err != nil {
		return false, fmt.Errorf("stream %s: %w", l.names.Stream(), err)
	}
	return first < info.State.FirstSeq, nil
}

// lastBefore returns the stream sequence of r's last event of type typ before seq; 0 when there
// is none. Most often that is r's last one of all; else (the bridge is behind) the events of that
// type are read forward — uninstalls of one release are few.
func (l *lookup) lastBefore(ctx context.Context, r events.Release, typ string, seq uint64) (uint64, error) {
	subject, err := l.names.Subject(r, typ)
	if err != nil {
		return 0, err
	}
	last, err := l.stream.GetLastMsgForSubject(ctx, subject)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("last %s of %s: %w", typ, r, err)
	case last.Sequence < seq:
		return last.Sequence, nil
	}
	var before uint64
	for from := uint64(1); from < seq; {
		m, err := l.stream.GetMsg(ctx, from, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("%s of %s: %w", typ, r, err)
		}
		if m.Sequence >= seq {
			break
		}
		before, from = m.Sequence, m.Sequence+1
	}
	return before, nil
}
