package flow

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/events"
)

// Streamed is an event with its stream sequence.
type Streamed struct {
	Seq   uint64
	Event event.Event
}

// Watcher reads one release's events from a stream sequence on, in stream order.
type Watcher struct {
	r     *reader // nil for one of a Watchers' (q)
	names events.Names
	q     *queue
}

// Watch starts reading rel's events in the stream of the system names, from stream sequence
// fromSeq on (an ordered consumer: nothing to clean up on the server). Stop it when done.
func Watch(ctx context.Context, js jetstream.JetStream, names events.Names, rel events.Release, fromSeq uint64) (*Watcher, error) {
	filter, err := names.ReleaseFilter(rel)
	if err != nil {
		return nil, err
	}
	r := &reader{js: js, stream: names.Stream(), filter: filter, next: fromSeq}
	if err := r.open(ctx); err != nil {
		return nil, fmt.Errorf("follow %s: %w", rel, err)
	}
	return &Watcher{r: r, names: names}, nil
}

// Stop stops reading.
func (w *Watcher) Stop() {
	if w.q != nil {
		w.q.drop()
		return
	}
	w.r.stop()
}

// Next blocks until the next event, or ctx ends; malformed events are skipped (catalog-check
// dead-letters them).
func (w *Watcher) Next(ctx context.Context) (event.Event, error) {
	if w.q != nil {
		return w.q.next(ctx)
	}
	for {
		msg, err := w.r.nextMsg(ctx)
		if err != nil {
			return event.Event{}, err
		}
		e, err := w.names.Decode(msg.Subject(), msg.Headers(), msg.Data())
		if err == nil {
			return e, nil
		}
	}
}

// reader reads a stream through an ordered consumer from a sequence on. When the consumer fails
// and nats.go cannot recreate it at its first attempt (a NATS node lost, a stream leader being
// elected), the reader creates another itself, from the message after the last one it read,
// until its context ends: nats.go's own reset would retry forever, deaf to that context, and a
// follower — `troupe release --wait` — would hang past every deadline. (nats.go's one attempt
// has a 10 s timeout of its own: Next may return that long after its context ended.) A closed
// connection ends it: nothing to make a consumer with.
type reader struct {
	js     jetstream.JetStream
	stream string
	filter string
	next   uint64 // the stream sequence to read from; touched by nextMsg's caller only

	mu      sync.Mutex
	it      jetstream.MessagesContext // nil while none works
	stopped bool
}

// open creates the ordered consumer and its iterator, within 5 s.
func (r *reader) open(ctx context.Context) error {
	octx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cons, err := r.js.OrderedConsumer(octx, r.stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{r.filter},
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: r.next, MaxResetAttempts: 1})
	if err != nil {
		return err
	}
	it, err := cons.Messages()
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		it.Stop()
		return jetstream.ErrMsgIteratorClosed
	}
	r.it = it
	return nil
}

// nextMsg returns the next message, making a new consumer whenever the one it reads fails; it
// returns an error only once ctx ends or the reader is stopped.
func (r *reader) nextMsg(ctx context.Context) (jetstream.Msg, error) {
	for attempt := 0; ; attempt++ {
		r.mu.Lock()
		it, stopped := r.it, r.stopped
		r.mu.Unlock()
		if stopped {
			return nil, jetstream.ErrMsgIteratorClosed
		}
		if it != nil {
			msg, err := it.Next(jetstream.NextContext(ctx))
			if err == nil {
				if md, err := msg.Metadata(); err == nil {
					r.next = md.Sequence.Stream + 1
				}
				return msg, nil
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			it.Stop()
			r.mu.Lock()
			if r.it == it {
				r.it = nil
			}
			stopped := r.stopped
			r.mu.Unlock()
			if stopped || r.js.Conn().IsClosed() {
				return nil, err
			}
		} else if r.js.Conn().IsClosed() {
			return nil, nats.ErrConnectionClosed
		} else if err := r.open(ctx); err == nil {
			continue
		} else if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		select {
		case <-time.After(min(250*time.Millisecond<<min(attempt, 3), 2*time.Second)):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (r *reader) stop() {
	r.mu.Lock()
	r.stopped = true
	it := r.it
	r.mu.Unlock()
	if it != nil {
		it.Stop()
	}
}

// Read reads every event of rel in the stream of the system names, oldest first; malformed
// events are skipped. It returns once it has read the last one (or, should the stream not
// answer, after 5 s without a message), or when ctx ends.
func Read(ctx context.Context, js jetstream.JetStream, names events.Names, rel events.Release) ([]Streamed, error) {
	filter, err := names.ReleaseFilter(rel)
	if err != nil {
		return nil, err
	}
	// Gone from the server soon after the read (not the library's default 5 minutes): the web UI
	// reads a trace each time a page asks.
	cons, err := js.OrderedConsumer(ctx, names.Stream(), jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter},
		InactiveThreshold: 10 * time.Second})
	if err != nil {
		return nil, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, err
	}
	var out []Streamed
	if info.NumPending == 0 {
		return nil, nil
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, err
	}
	defer it.Stop()
	for {
		next, cancel := context.WithTimeout(ctx, 5*time.Second)
		msg, err := it.Next(jetstream.NextContext(next))
		cancel()
		if err != nil && ctx.Err() == nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		md, err := msg.Metadata()
		if err != nil {
			return nil, err
		}
		if e, err := names.Decode(msg.Subject(), msg.Headers(), msg.Data()); err == nil {
			out = append(out, Streamed{Seq: md.Sequence.Stream, Event: e})
		}
		if md.NumPending == 0 {
			return out, nil
		}
	}
}

// Watchers reads the events of many releases through one ordered consumer, and hands each
// release's to its own Watcher: a thousand releases followed at once cost the server one
// consumer, not a thousand.
type Watchers struct {
	r     *reader
	names events.Names
	of    map[events.Release]*Watcher
	done  chan struct{}
	stop  context.CancelFunc
}

// WatchAll starts reading the events of rels from stream sequence fromSeq on. Every release
// must have the same name (a name in many namespaces: one subject filter holds them); those of
// other releases that filter matches are skipped. Stop it when done.
func WatchAll(ctx context.Context, js jetstream.JetStream, names events.Names, rels []events.Release, fromSeq uint64) (*Watchers, error) {
	if len(rels) == 0 {
		return nil, errors.New("follow: no release")
	}
	for _, r := range rels {
		if r.Name != rels[0].Name {
			return nil, fmt.Errorf("follow %s and %s: releases followed together have one name", rels[0], r)
		}
	}
	filter, err := names.NameFilter(rels[0].Name)
	if err != nil {
		return nil, err
	}
	r := &reader{js: js, stream: names.Stream(), filter: filter, next: fromSeq}
	if err := r.open(ctx); err != nil {
		return nil, fmt.Errorf("follow %s in %d namespaces: %w", rels[0].Name, len(rels), err)
	}
	ws := &Watchers{r: r, names: names, of: map[events.Release]*Watcher{}, done: make(chan struct{})}
	for _, r := range rels {
		ws.of[r] = &Watcher{names: names, q: newQueue()}
	}
	rctx, stop := context.WithCancel(context.Background())
	ws.stop = stop
	go ws.run(rctx)
	return ws, nil
}

// Of is the Watcher of rel, one of those WatchAll was given (nil for another).
func (ws *Watchers) Of(rel events.Release) *Watcher { return ws.of[rel] }

// Stop stops reading: every Watcher's Next returns an error once it has handed out what came.
func (ws *Watchers) Stop() {
	ws.stop()
	ws.r.stop()
	<-ws.done
}

func (ws *Watchers) run(ctx context.Context) {
	defer close(ws.done)
	for {
		msg, err := ws.r.nextMsg(ctx)
		if err != nil {
			for _, w := range ws.of {
				w.q.end(err)
			}
			return
		}
		e, err := ws.names.Decode(msg.Subject(), msg.Headers(), msg.Data())
		if err != nil {
			continue // malformed: skipped, as Next skips it
		}
		if r, err := events.ReleaseOf(e); err == nil {
			if w := ws.of[r]; w != nil {
				w.q.push(e)
			}
		}
	}
}

// queue is one release's events, between the reader and its follower: unbounded, so that a
// slow follower never holds the others up.
type queue struct {
	mu      sync.Mutex
	evs     []event.Event
	err     error
	dropped bool
	wake    chan struct{}
}

func newQueue() *queue { return &queue{wake: make(chan struct{}, 1)} }

func (q *queue) push(e event.Event) {
	q.mu.Lock()
	if !q.dropped {
		q.evs = append(q.evs, e)
	}
	q.mu.Unlock()
	q.signal()
}

func (q *queue) end(err error) {
	q.mu.Lock()
	q.err = err
	q.mu.Unlock()
	q.signal()
}

// drop forgets what came and what comes: the follower stopped.
func (q *queue) drop() {
	q.mu.Lock()
	q.evs, q.dropped = nil, true
	q.mu.Unlock()
}

func (q *queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *queue) next(ctx context.Context) (event.Event, error) {
	for {
		q.mu.Lock()
		switch {
		case len(q.evs) > 0:
			e := q.evs[0]
			q.evs[0] = event.Event{}
			q.evs = q.evs[1:]
			q.mu.Unlock()
			return e, nil
		case q.err != nil:
			err := q.err
			q.mu.Unlock()
			return event.Event{}, err
		}
		q.mu.Unlock()
		select {
		case <-q.wake:
		case <-ctx.Done():
			return event.Event{}, ctx.Err()
		}
	}
}
