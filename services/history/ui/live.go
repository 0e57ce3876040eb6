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
// newest on, one per server however many pages are open) and hands each notice to every open
// page. A page too slow to take its notices is dropped (its browser reconnects, and reloads
// what it shows).
type feed struct {
	mu    sync.Mutex
	pages map[chan []byte]struct{}
}

// pageBuffer is how many notices a page may be behind before it is dropped.
const pageBuffer = 256

func newFeed(ctx context.Context, js jetstream.JetStream, names events.Names, log zerolog.Logger) *feed {
	f := &feed{pages: map[chan []byte]struct{}{}}
	go f.follow(ctx, js, names.Stream(), names.ReleaseSubjects(), log, func(msg jetstream.Msg, seq uint64) *Notice {
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
	go f.follow(ctx, js, names.DeadLetterStream(), names.DeadLetterSubjects(), log, func(msg jetstream.Msg, seq uint64) *Notice {
		d := events.ParseDeadLetter(msg.Headers(), msg.Data())
		n := &Notice{Kind: "deadletter", Sequence: seq, Service: d.Service, Reason: d.Reason, Time: d.Time}
		if rel, typ, err := names.ParseSubject(d.Subject); err == nil {
			n.Release, n.Type = rel.String(), typ
		}
		return n
	})
	return f
}

// follow reads stream's new messages on filter until ctx ends, trying again while the stream is
// not there.
func (f *feed) follow(ctx context.Context, js jetstream.JetStream, stream, filter string, log zerolog.Logger, notice func(jetstream.Msg, uint64) *Notice) {
	for wait := 100 * time.Millisecond; ctx.Err() == nil; wait = min(2*wait, 5*time.Second) {
		cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter},
			DeliverPolicy: jetstream.DeliverNewPolicy})
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
				<-ctx.Done()
				cc.Stop()
				return
			}
		}
		log.Warn().Err(err).Str("stream", stream).Msg("live feed: cannot read the stream yet")
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
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
			delete(f.pages, page)
			close(page)
		}
	}
}

func (f *feed) open() chan []byte {
	page := make(chan []byte, pageBuffer)
	f.mu.Lock()
	f.pages[page] = struct{}{}
	f.mu.Unlock()
	return page
}

func (f *feed) close(page chan []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.pages[page]; ok {
		delete(f.pages, page)
		close(page)
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
