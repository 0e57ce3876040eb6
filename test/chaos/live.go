package chaos

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/events"
)

// live follows the events stream while the run goes, for the workload to know what became of
// its requests (which flow a call started, how it ended, which revisions are ready). It is a
// convenience for driving the run; the check reads the stream again from the start.
type live struct {
	mu       sync.Mutex
	starts   map[string][]string // release → flow ids, in stream order
	ends     map[string]Event    // flow → its first terminal event
	revision map[string]int      // flow → the revision its events carry
}

func newLive() *live {
	return &live{starts: map[string][]string{}, ends: map[string]Event{}, revision: map[string]int{}}
}

// follow reads the stream until ctx ends, starting again after the last sequence it saw when
// its consumer fails (a NATS restart).
func (l *live) follow(ctx context.Context, js jetstream.JetStream, names events.Names) {
	var next uint64 = 1
	for ctx.Err() == nil {
		cons, err := js.OrderedConsumer(ctx, names.Stream(), jetstream.OrderedConsumerConfig{
			DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: next})
		if err != nil {
			sleep(ctx, time.Second)
			continue
		}
		it, err := cons.Messages()
		if err != nil {
			sleep(ctx, time.Second)
			continue
		}
		stop := context.AfterFunc(ctx, it.Stop)
		for {
			msg, err := it.Next()
			if err != nil {
				break
			}
			md, err := msg.Metadata()
			if err != nil {
				continue
			}
			next = md.Sequence.Stream + 1
			if e, err := names.Decode(msg.Subject(), msg.Headers(), msg.Data()); err == nil {
				if ev, err := toEvent(e); err == nil {
					l.add(ev)
				}
			}
		}
		stop()
		it.Stop()
		sleep(ctx, time.Second)
	}
}

func (l *live) add(e Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if startsFlow(e.Type) {
		l.starts[e.Release] = append(l.starts[e.Release], e.ID)
		return
	}
	if e.Revision > 0 && l.revision[e.Correlation] == 0 {
		l.revision[e.Correlation] = e.Revision
	}
	if _, ok := l.ends[e.Correlation]; !ok && events.EndsFlow(e.Type) {
		l.ends[e.Correlation] = e
	}
}

// startsOf is how many flows of rel the stream has shown so far.
func (l *live) startsOf(rel string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.starts[rel])
}

// waitStart waits up to d for the flow of rel after the first n, and returns its id ("" if none
// came).
func (l *live) waitStart(ctx context.Context, rel string, n int, d time.Duration) string {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		l.mu.Lock()
		s := l.starts[rel]
		l.mu.Unlock()
		if len(s) > n {
			return s[n]
		}
		sleep(ctx, 100*time.Millisecond)
	}
	return ""
}

// waitEnd waits until flow ended or deadline passed, and returns its terminal event (ok false
// when none came) and its revision.
func (l *live) waitEnd(ctx context.Context, flow string, deadline time.Time) (Event, int, bool) {
	for {
		l.mu.Lock()
		e, ok := l.ends[flow]
		rev := l.revision[flow]
		l.mu.Unlock()
		if ok || time.Now().After(deadline) || ctx.Err() != nil {
			return e, rev, ok
		}
		sleep(ctx, 200*time.Millisecond)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
