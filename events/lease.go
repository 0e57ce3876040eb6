package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrLeaseHeld is returned by Acquire when another holder has the lease.
var ErrLeaseHeld = errors.New("lease held by another holder")

// ErrLeaseLost is returned by Renew when the lease is no longer the holder's: it expired (and may
// have been taken) or was released.
var ErrLeaseLost = errors.New("lease lost")

// MinLeaseTTL is the shortest lease: the server's per-message TTL counts in seconds.
const MinLeaseTTL = time.Second

// Leases hands out leases on keys of the KVLeases bucket (made by Provision): at most one holder
// per key, and a lease ends on its own when its TTL passes unless the holder renews it — the
// key's value carries a per-message TTL, so the server removes it. A crashed holder keeps a lease
// no longer than its TTL; nothing has to clean up after it.
type Leases struct {
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	bucket string
	holder string
}

// LeaseInfo is what a lease's key holds: who has it, since when, until when, and why.
type LeaseInfo struct {
	Holder   string    `json:"holder"`
	Acquired time.Time `json:"acquired"`
	Expires  time.Time `json:"expires"`
	Note     string    `json:"note,omitempty"`
}

// NewLeases opens the leases bucket of names for holder, a name unique to this process (e.g.
// service, host and pid).
func NewLeases(ctx context.Context, js jetstream.JetStream, names Names, holder string) (*Leases, error) {
	bucket := names.KV(KVLeases)
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("leases: kv %s: %w", bucket, err)
	}
	return &Leases{js: js, kv: kv, bucket: bucket, holder: holder}, nil
}

// Lease is a held lease. Its methods are safe for concurrent use.
type Lease struct {
	l        *Leases
	key      string
	ttl      time.Duration
	note     string
	acquired time.Time

	mu  sync.Mutex
	rev uint64 // 0 once released or lost
}

// Acquire takes the lease on key for ttl (at least MinLeaseTTL). When another holder has it, the
// error wraps ErrLeaseHeld and names the holder.
func (l *Leases) Acquire(ctx context.Context, key string, ttl time.Duration, note string) (*Lease, error) {
	ttl = max(ttl, MinLeaseTTL)
	now := time.Now()
	le := &Lease{l: l, key: key, ttl: ttl, note: note, acquired: now}
	rev, err := l.kv.Create(ctx, key, le.value(now), jetstream.KeyTTL(ttl))
	if errors.Is(err, jetstream.ErrKeyExists) {
		if info, herr := l.Holder(ctx, key); herr == nil && info != nil {
			return nil, fmt.Errorf("lease %s: %w: %s (%s) until %s", key, ErrLeaseHeld, info.Holder, info.Note, info.Expires.Format(time.RFC3339))
		}
		return nil, fmt.Errorf("lease %s: %w", key, ErrLeaseHeld)
	}
	if err != nil {
		return nil, fmt.Errorf("lease %s: %w", key, err)
	}
	le.rev = rev
	return le, nil
}

// Holder returns who holds key, or nil when nobody does.
func (l *Leases) Holder(ctx context.Context, key string) (*LeaseInfo, error) {
	e, err := l.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lease %s: %w", key, err)
	}
	var info LeaseInfo
	if err := json.Unmarshal(e.Value(), &info); err != nil {
		return nil, fmt.Errorf("lease %s: %w", key, err)
	}
	return &info, nil
}

func (le *Lease) value(now time.Time) []byte {
	b, _ := json.Marshal(LeaseInfo{Holder: le.l.holder, Acquired: le.acquired, Expires: now.Add(le.ttl), Note: le.note})
	return b
}

// Renew extends the lease by its TTL from now. It fails with ErrLeaseLost when the lease is no
// longer the holder's.
func (le *Lease) Renew(ctx context.Context) error {
	le.mu.Lock()
	defer le.mu.Unlock()
	if le.rev == 0 {
		return fmt.Errorf("lease %s: %w", le.key, ErrLeaseLost)
	}
	// KeyValue.Update cannot set a TTL: publish to the key's subject as Update does, with one.
	msg := &nats.Msg{Subject: "$KV." + le.l.bucket + "." + le.key, Data: le.value(time.Now()), Header: nats.Header{}}
	ack, err := le.l.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(le.rev), jetstream.WithMsgTTL(le.ttl))
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		le.rev = 0
		return fmt.Errorf("lease %s: %w", le.key, ErrLeaseLost)
	}
	if err != nil {
		return fmt.Errorf("lease %s: renew: %w", le.key, err)
	}
	le.rev = ack.Sequence
	return nil
}

// Release ends the lease, if it is still the holder's.
func (le *Lease) Release(ctx context.Context) error {
	le.mu.Lock()
	defer le.mu.Unlock()
	if le.rev == 0 {
		return nil
	}
	rev := le.rev
	le.rev = 0
	err := le.l.kv.Delete(ctx, le.key, jetstream.LastRevision(rev))
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) && !IsCASConflict(err) {
		return fmt.Errorf("lease %s: release: %w", le.key, err)
	}
	return nil
}

// Keep renews the lease every third of its TTL until ctx ends, and returns a channel that is
// closed if the lease is lost (a renewal failed past the TTL, or found the lease taken): work
// done under the lease must stop then.
func (le *Lease) Keep(ctx context.Context) <-chan struct{} {
	lost := make(chan struct{})
	go func() {
		last := time.Now()
		t := time.NewTicker(le.ttl / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			err := le.Renew(ctx)
			switch {
			case err == nil:
				last = time.Now()
			case errors.Is(err, ErrLeaseLost), time.Since(last) >= le.ttl:
				if ctx.Err() == nil {
					close(lost)
				}
				return
			}
		}
	}()
	return lost
}
