package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrNotRequested is returned for a stream sequence that holds no release.requested of the release.
var ErrNotRequested = errors.New("not a release.requested of this release")

// Revisions numbers each release's revisions: one per release.requested, from 1, in the events
// stream's order. Every service and replica that asks gets the same numbers, because they are
// derived from the stream and recorded in the KVReleases bucket (so they outlive the stream's
// max age): a counter per release (the last numbered sequence and revision), and the revision of
// each numbered sequence. Numbering is idempotent and safe to run concurrently: two replicas
// compute the same numbers, and the counter moves by compare-and-set.
type Revisions struct {
	names  Names
	stream jetstream.Stream
	kv     jetstream.KeyValue
}

// NewRevisions opens the events stream and the KVReleases bucket of names (both made by
// Provision).
func NewRevisions(ctx context.Context, js jetstream.JetStream, names Names) (*Revisions, error) {
	s, err := js.Stream(ctx, names.Stream())
	if err != nil {
		return nil, fmt.Errorf("revisions: stream %s: %w", names.Stream(), err)
	}
	kv, err := js.KeyValue(ctx, names.KV(KVReleases))
	if err != nil {
		return nil, fmt.Errorf("revisions: kv %s: %w", names.KV(KVReleases), err)
	}
	return &Revisions{names: names, stream: s, kv: kv}, nil
}

type revCounter struct {
	Seq uint64 `json:"seq"`
	Rev int    `json:"rev"`
}

// numberAttempts bounds how often Of moves the counter after losing the compare-and-set to another
// caller that numbered the same requests: each loss means someone else moved the counter forward,
// so it takes as many concurrent numberers of one release to exhaust it.
const numberAttempts = 32

// Of returns the revision of the release.requested of r stored at stream sequence seq. Callers
// racing to number the same requests all get the same answer: one moves the counter, the others
// lose the compare-and-set, read back and retry (bounded by numberAttempts, with a short jittered
// pause), so a lost race is never an error. It wraps ErrNotRequested when seq holds no request of r.
func (rv *Revisions) Of(ctx context.Context, r Release, seq uint64) (int, error) {
	return rv.number(ctx, r, seq, true)
}

// Peek is Of for a reader that may not write the counter (the CLI's and a viewer's NATS
// identity): the revision Of gives seq, counted from the counter the services keep, without
// recording it. Once a service numbered seq, it reads the recorded revision.
func (rv *Revisions) Peek(ctx context.Context, r Release, seq uint64) (int, error) {
	return rv.number(ctx, r, seq, false)
}

func (rv *Revisions) number(ctx context.Context, r Release, seq uint64, record bool) (int, error) {
	subject, err := rv.names.Subject(r, TypeRequested)
	if err != nil {
		return 0, err
	}
	base := "rev." + r.Namespace + "." + r.Name
	for attempt := 1; ; attempt++ {
		// The counter first: a sequence at or below it was numbered before the counter moved.
		var c revCounter
		var kvRev uint64
		entry, err := rv.kv.Get(ctx, base)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return 0, fmt.Errorf("revisions of %s: %w", r, err)
		default:
			if err := json.Unmarshal(entry.Value(), &c); err != nil {
				return 0, fmt.Errorf("revisions of %s: counter: %w", r, err)
			}
			kvRev = entry.Revision()
		}
		n, err := rv.recorded(ctx, base, seq)
		switch {
		case err == nil:
			return n, nil
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			return 0, err
		case seq <= c.Seq:
			// Numbered already, yet its key was not read: either seq holds no request of r, or
			// the read went to a replica of the bucket that lags the one the counter came from
			// (replicated buckets answer reads from any replica). The stream tells which.
			m, err := rv.stream.GetMsg(ctx, seq)
			if err != nil || m.Subject != subject {
				return 0, fmt.Errorf("revisions of %s: sequence %d: %w", r, seq, ErrNotRequested)
			}
			if attempt == numberAttempts {
				return 0, fmt.Errorf("revisions of %s: sequence %d numbered but its revision not readable after %d attempts", r, seq, attempt)
			}
			if err := pause(ctx, attempt); err != nil {
				return 0, fmt.Errorf("revisions of %s: %w", r, err)
			}
			continue
		}
		// Number every request of r after the counter, up to seq, in stream order.
		next := c
		for from := c.Seq + 1; from <= seq; {
			m, err := rv.stream.GetMsg(ctx, from, jetstream.WithGetMsgSubject(subject))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				break
			}
			if err != nil {
				return 0, fmt.Errorf("revisions of %s: read stream at %d: %w", r, from, err)
			}
			if m.Sequence > seq {
				break
			}
			next.Rev++
			next.Seq = m.Sequence
			if !record {
				from = m.Sequence + 1
				continue
			}
			if _, err := rv.kv.Put(ctx, base+"."+strconv.FormatUint(m.Sequence, 10), []byte(strconv.Itoa(next.Rev))); err != nil {
				return 0, fmt.Errorf("revisions of %s: %w", r, err)
			}
			from = m.Sequence + 1
		}
		if next.Seq != seq {
			return 0, fmt.Errorf("revisions of %s: sequence %d: %w", r, seq, ErrNotRequested)
		}
		if !record {
			return next.Rev, nil
		}
		b, _ := json.Marshal(next)
		if kvRev == 0 {
			_, err = rv.kv.Create(ctx, base, b)
		} else {
			_, err = rv.kv.Update(ctx, base, b, kvRev)
		}
		switch {
		case err == nil:
			// Moved the counter: read the answer back.
		case !IsCASConflict(err):
			return 0, fmt.Errorf("revisions of %s: %w", r, err)
		case attempt == numberAttempts:
			return 0, fmt.Errorf("revisions of %s: the counter moved under %d attempts in a row: %w", r, attempt, err)
		default:
			// Another caller moved it first (or this one read a replica that lagged): read the
			// answer back after a pause that keeps racers apart.
			if err := pause(ctx, attempt); err != nil {
				return 0, fmt.Errorf("revisions of %s: %w", r, err)
			}
		}
	}
}

// pause waits a random time up to 2^attempt milliseconds (at most 256), or until ctx ends.
func pause(ctx context.Context, attempt int) error {
	t := time.NewTimer(time.Duration(rand.Int64N(int64(time.Millisecond) << min(attempt, 8))))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Latest returns the stream sequence and revision of the newest release.requested of r, or
// (0, 0) when there is none.
func (rv *Revisions) Latest(ctx context.Context, r Release) (uint64, int, error) {
	subject, err := rv.names.Subject(r, TypeRequested)
	if err != nil {
		return 0, 0, err
	}
	m, err := rv.stream.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("latest request of %s: %w", r, err)
	}
	n, err := rv.Of(ctx, r, m.Sequence)
	return m.Sequence, n, err
}

// First returns the stream sequence of r's revision 1 (its first release.requested), or 0 when
// none was numbered. It outlives the stream's max age, so a caller can tell whether the stream
// still holds a release's whole history: it does when First is at or after the stream's first
// sequence.
func (rv *Revisions) First(ctx context.Context, r Release) (uint64, error) {
	if err := r.Validate(); err != nil {
		return 0, err
	}
	base := "rev." + r.Namespace + "." + r.Name + "."
	keys, err := rv.kv.ListKeysFiltered(ctx, base+"*")
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("first revision of %s: %w", r, err)
	}
	defer func() { _ = keys.Stop() }()
	// Requests are numbered in stream order: the lowest sequence numbered is revision 1.
	var first uint64
	for k := range keys.Keys() {
		seq, err := strconv.ParseUint(strings.TrimPrefix(k, base), 10, 64)
		if err == nil && (first == 0 || seq < first) {
			first = seq
		}
	}
	return first, nil
}

func (rv *Revisions) recorded(ctx context.Context, base string, seq uint64) (int, error) {
	e, err := rv.kv.Get(ctx, base+"."+strconv.FormatUint(seq, 10))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(string(e.Value()))
}

// IsCASConflict reports whether err is a lost compare-and-set on a KV key (Create of a key
// that exists, Update or Delete at a revision that is not the last): "wrong last sequence", error
// 10071 from a stream of one replica, 10164 from a replicated one (which ErrKeyExists alone does
// not match); nats.go also maps both to ErrKeyRevisionMismatch for Update.
func IsCASConflict(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// Superseding returns the stream sequence and revision of a release.requested of r numbered
// after revision that supersedes it: of the same kind, a real request for a real one and a dry
// run for a dry run (dryRun), so that a dry run never drops a real request's work nor a real
// request a dry run's. It is the newest request of r when that is of the kind, else the first
// of the kind after revision; (0, 0) when there is none. Requests that cannot be decoded count
// as real.
func (rv *Revisions) Superseding(ctx context.Context, r Release, revision int, dryRun bool) (uint64, int, error) {
	seq, latest, err := rv.Latest(ctx, r)
	if err != nil || latest <= revision {
		return 0, 0, err
	}
	subject, err := rv.names.Subject(r, TypeRequested)
	if err != nil {
		return 0, 0, err
	}
	m, err := rv.stream.GetMsg(ctx, seq)
	if err != nil {
		return 0, 0, fmt.Errorf("request of %s at %d: %w", r, seq, err)
	}
	if rv.isDryRun(m) == dryRun {
		return seq, latest, nil
	}
	// The newest is of the other kind: read the requests after revision, from the first of them.
	from, err := rv.sequenceOf(ctx, r, subject, revision+1, seq)
	if err != nil {
		return 0, 0, err
	}
	for from < seq {
		m, err := rv.stream.GetMsg(ctx, from, jetstream.WithGetMsgSubject(subject))
		if err != nil {
			return 0, 0, fmt.Errorf("requests of %s after %d: %w", r, from, err)
		}
		if m.Sequence >= seq {
			break
		}
		if rv.isDryRun(m) == dryRun {
			n, err := rv.Of(ctx, r, m.Sequence)
			return m.Sequence, n, err
		}
		from = m.Sequence + 1
	}
	return 0, 0, nil
}

// RolledBackSince returns the id of a release.rollback.requested of r stored after r's
// release.requested numbered revision, "" when there is none: the rollback is newer, and
// supersedes that revision's work. An automatic rollback (history's, after a failure) does not:
// a request the user made while the failed revision was on its way is newer in intent. A look at r's last rollback request and at the first request
// after it; nothing more when r was never rolled back.
func (rv *Revisions) RolledBackSince(ctx context.Context, r Release, revision int) (string, error) {
	rb, err := rv.lastOf(ctx, r, TypeRollbackRequested)
	if err != nil || rb == nil || rv.isAutomatic(rb) {
		return "", err
	}
	subject, err := rv.names.Subject(r, TypeRequested)
	if err != nil {
		return "", err
	}
	// The first request after the rollback: revision's request came before the rollback when
	// it has a higher number, or there is none.
	m, err := rv.stream.GetMsg(ctx, rb.Sequence+1, jetstream.WithGetMsgSubject(subject))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return rb.Header.Get(jetstream.MsgIDHeader), nil
	}
	if err != nil {
		return "", fmt.Errorf("requests of %s after its rollback: %w", r, err)
	}
	n, err := rv.Of(ctx, r, m.Sequence)
	if err != nil || n <= revision {
		return "", err
	}
	return rb.Header.Get(jetstream.MsgIDHeader), nil
}

// SupersedingRollback says what supersedes the rollback of r whose release.rollback.requested
// has id: a newer rollback request (its id), or a real release.requested stored after it (its
// revision); zero values when nothing does. Dry runs do not supersede a rollback.
func (rv *Revisions) SupersedingRollback(ctx context.Context, r Release, id string) (revision int, rollback string, err error) {
	rb, err := rv.lastOf(ctx, r, TypeRollbackRequested)
	if err != nil || rb == nil {
		return 0, "", err
	}
	if last := rb.Header.Get(jetstream.MsgIDHeader); last != id {
		return 0, last, nil // the last rollback request is another one: it came after
	}
	subject, err := rv.names.Subject(r, TypeRequested)
	if err != nil {
		return 0, "", err
	}
	for from := rb.Sequence + 1; ; {
		m, err := rv.stream.GetMsg(ctx, from, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return 0, "", nil
		}
		if err != nil {
			return 0, "", fmt.Errorf("requests of %s after its rollback: %w", r, err)
		}
		if !rv.isDryRun(m) {
			n, err := rv.Of(ctx, r, m.Sequence)
			return n, "", err
		}
		from = m.Sequence + 1
	}
}

// lastOf is r's last message of type typ in the stream, nil if there is none.
func (rv *Revisions) lastOf(ctx context.Context, r Release, typ string) (*jetstream.RawStreamMsg, error) {
	subject, err := rv.names.Subject(r, typ)
	if err != nil {
		return nil, err
	}
	m, err := rv.stream.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("last %s of %s: %w", typ, r, err)
	}
	return m, nil
}

// sequenceOf returns a stream sequence at or below that of r's request numbered revision, and
// above every earlier request's; last is a request's numbered revision or more (the newest's).
// Revisions grow with sequences: a binary search over the stream, each probe the first request
// at or after a sequence.
func (rv *Revisions) sequenceOf(ctx context.Context, r Release, subject string, revision int, last uint64) (uint64, error) {
	lo, hi := uint64(1), last
	for lo < hi {
		mid := lo + (hi-lo)/2
		m, err := rv.stream.GetMsg(ctx, mid, jetstream.WithGetMsgSubject(subject))
		if err != nil {
			return 0, fmt.Errorf("requests of %s: %w", r, err)
		}
		n, err := rv.Of(ctx, r, m.Sequence)
		if err != nil {
			return 0, err
		}
		if n >= revision {
			hi = mid
		} else {
			lo = m.Sequence + 1
		}
	}
	return lo, nil
}

func (rv *Revisions) isAutomatic(m *jetstream.RawStreamMsg) bool {
	e, err := rv.names.Decode(m.Subject, m.Header, m.Data)
	if err != nil {
		return false
	}
	rb, err := Data[RollbackRequested](e)
	return err == nil && rb.Automatic
}

func (rv *Revisions) isDryRun(m *jetstream.RawStreamMsg) bool {
	e, err := rv.names.Decode(m.Subject, m.Header, m.Data)
	if err != nil {
		return false
	}
	req, err := Data[Requested](e)
	return err == nil && req.Options.DryRun
}
