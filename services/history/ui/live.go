package ui

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/events"
)

// Notice is one message of the live feed: an event on the stream, or a dead letter.
type Notice struct {
	Kind     string    `json:"kind"` // event or deadletter
	Sequence uint64    `json:"sequence"`
	Type     string    `json:"type,omitempty"`
	Release  string    `json:"release,omitempty"` // namespace/name
	Revision int       `json:"revision,omitempty"`
	Source   string    `json:"source,omitempty"`
	ID       string    `json:"id,omitempty"`
	Flow     string    `json:"flow,omitempty"` // the correlation id
	Time     time.Time `json:"time"`
	Service  string    `json:"service,omitempty"` // a dead letter's
	Reason   string    `json:"reason,omitempty"`  // a dead letter's
}

// feed reads the events and the dead letters as they are stored (ordered consumers from the
// newest on, one pair per server however many pages are open, and none while no page is: a
// history replica nobody watches reads nothing more) and hands each notice to every open page.
// A page too slow to take its notices is dropped (its browser reconnects, and reloads what it
// shows).
type feed struct {
	ctx   context.Context // the server's
	js    jetstream.JetStream
	names events.Names
	log   zerolog.Logger

	mu    sync.Mutex
	pages map[chan []byte]struct{}
	stop  context.CancelFunc // the consumers', while a page is open
}

// pageBuffer is how many notices a page may be behind before it is dropped.
const pageBuffer = 256

func newFeed(ctx context.Context, js jetstream.JetStream, names events.Names, log zerolog.Logger) *feed {
	return &feed{ctx: ctx, js: js, names: names, log: log, pages: map[chan []byte]struct{}{}}
}

// start starts the consumers, and returns once each reads (or, its stream not there yet, after
// its first try: it goes on trying): a page that asks for what it shows once its feed is open
// misses nothing in between.
func (f *feed) start() context.CancelFunc {
	ctx, cancel := context.WithCancel(f.ctx)
	names := f.names
	events1 := f.follow(ctx, names.Stream(), names.ReleaseSubjects(), func(msg jetstream.Msg, seq uint64) *Notice {
		e, err := names.Decode(msg.Subject(), msg.Headers(), msg.Data())
		if err != nil {
			return nil // catalog-check dead-letters it; the dead letter comes through the other feed
		}
		if _, ok := events.Lookup(e.Type()); !ok {
			return nil // a type of a user's own: nothing the pages show, nothing history folds
		}
		return &Notice{Kind: "event", Sequence: seq, Type: e.Type(), Release: e.Subject(), Revision: events.Revision(e),
			Source: e.Source(), ID: e.ID(), Flow: events.CorrelationID(e), Time: e.Time()}
	})
	letters := f.follow(ctx, names.DeadLetterStream(), names.DeadLetterSubjects(), func(msg jetstream.Msg, seq uint64) *Notice {
		d := events.ParseDeadLetter(msg.Headers(), msg.Data())
		n := &Notice{Kind: "deadletter", Sequence: seq, Service: d.Service, Reason: d.Reason, Time: d.Time}
		if rel, typ, err := names.ParseSubject(d.Subject); err == nil {
			n.Release, n.Type = rel.String(), typ
		}
		return n
	})
	<-events1
	<-letters
	return cancel
}

// follow reads stream's new messages on filter until ctx ends, trying again while the stream is
// not there. The channel it returns is closed once it reads, or its first try failed.
func (f *feed) follow(ctx context.Context, stream, filter string, notice func(jetstream.Msg, uint64) *Notice) <-chan struct{} {
	tried := make(chan struct{})
	go func() {
		var once sync.Once
		defer once.Do(func() { close(tried) })
		for wait := 100 * time.Millisecond; ctx.Err() == nil; wait = min(2*wait, 5*time.Second) {
			// Gone from the server soon after the last page closed (not the library's 5 minutes).
			cons, err := f.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter},
				DeliverPolicy: jetstream.DeliverNewPolicy, InactiveThreshold: 5 * time.Second})
			if err == nil {
				var cc jetstream.ConsumeContext
				cc, err = cons.Consume(func(msg jetstream.Msg) {
					md, err := msg.Metadata()
					if err != nil {
						return
					}
					if n := notice(msg, md.Sequence.Stream); n != nil {
						f.send(n)
					}
				})
				if err == nil {
					once.Do(func() { close(tried) })
					<-ctx.Done()
					cc.Stop()
					return
				}
			}
			once.Do(func() { close(tried) })
			f.log.Warn().Err(err).Str("stream", stream).Msg("live feed: cannot read the stream yet")
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
		}
	}()
	return tried
}

func (f *feed) send(n *Notice) {
	b, err := json.Marshal(n)
	if err != nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for page := range f.pages {
		select {
		case page <- b:
		default:
			f.drop(page)
		}
	}
}

// open opens a page's feed, starting the consumers for the first.
func (f *feed) open() chan []byte {
	page := make(chan []byte, pageBuffer)
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.pages) == 0 && f.stop == nil {
		f.stop = f.start()
	}
	f.pages[page] = struct{}{}
	return page
}

// close closes a page's feed, stopping the consumers after the last.
func (f *feed) close(page chan []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.pages[page]; ok {
		f.drop(page)
	}
}

// drop forgets page, which is open, and stops the consumers when it was the last; f.mu is held.
func (f *feed) drop(page chan []byte) {
	delete(f.pages, page)
	close(page)
	if len(f.pages) == 0 && f.stop != nil {
		f.stop()
		f.stop = nil
	}
}

// live streams the feed to a page as Server-Sent Events: one "notice" per event or dead letter,
// a comment every 15 seconds so that proxies keep the connection open.
func (s *Server) live(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		reply(w, nil, &httpError{http.StatusInternalServerError, "streaming is not supported here"})
		return
	}
	page := s.feed.open()
	defer s.feed.close(page)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	fmt.Fprint(w, "retry: 1000\n: troupe live feed\n\n")
	fl.Flush()
	tick := time.NewTicker(15 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.stop: // the server stops: an open page must not hold its shutdown
			return
		case b, ok := <-page:
			if !ok {
				return // too slow: the browser reconnects
			}
			fmt.Fprintf(w, "event: notice\ndata: %s\n\n", b)
			fl.Flush()
		case <-tick.C:
			fmt.Fprint(w, ": keep-alive\n\n")
			fl.Flush()
		}
	}
}
