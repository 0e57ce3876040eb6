package events

import (
	"fmt"
	"strings"
)

// Subject layout. Release names and namespaces are DNS-1123 labels, so they never contain a dot
// and always take exactly one subject token; the event part may take several
// ("rollback.requested").
//
// They are variables only so that a process can work in a sandbox (UseSubjectsPrefix); nothing
// else changes them.
var (
	// SubjectRoot is the first token(s) of every troupe subject: "troupe", or
	// "<prefix>.troupe" in a sandbox.
	SubjectRoot = "troupe"
	// ReleaseSubjects matches every release event: the events stream's subjects.
	ReleaseSubjects = SubjectRoot + ".release.>"
	// DeadLetterSubjects matches every dead letter: the dead-letter stream's subjects.
	DeadLetterSubjects = SubjectRoot + ".dlq.>"

	releasePrefix    = SubjectRoot + ".release."
	deadLetterPrefix = SubjectRoot + ".dlq."
)

const typePrefix = "release."

// UseSubjectsPrefix moves this process into the sandbox prefix: its subjects become
// <prefix>.troupe.…, its streams <PREFIX>_TROUPE and <PREFIX>_TROUPE_DLQ, its KV buckets
// <prefix>-troupe-…; the object stores (content-addressed, never changed) stay shared, so a
// replayed request finds its uploaded chart. `troupe replay --to PREFIX` fills such a sandbox;
// `troupe dev --subjects-prefix PREFIX` runs the services in it. Call it once, at start, before
// anything else of this package; an empty prefix is the live system.
func UseSubjectsPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	for _, tok := range strings.Split(prefix, ".") {
		if tok == "" || len(tok) > MaxNameLength || strings.Trim(tok, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
			return fmt.Errorf("subjects prefix %q: want dot-separated lower-case words (letters, digits, '-')", prefix)
		}
	}
	if prefix == "troupe" || strings.HasPrefix(prefix, "troupe.") {
		return fmt.Errorf("subjects prefix %q: would share troupe's live subjects", prefix)
	}
	SubjectRoot = prefix + ".troupe"
	ReleaseSubjects = SubjectRoot + ".release.>"
	DeadLetterSubjects = SubjectRoot + ".dlq.>"
	releasePrefix = SubjectRoot + ".release."
	deadLetterPrefix = SubjectRoot + ".dlq."
	name := strings.NewReplacer(".", "_", "-", "_").Replace(prefix)
	StreamName = strings.ToUpper(name) + "_TROUPE"
	DeadLetterStreamName = StreamName + "_DLQ"
	for _, kv := range []*string{&KVLeases, &KVReleases, &KVInventory, &KVHistory, &KVHealth} {
		*kv = strings.ReplaceAll(prefix, ".", "-") + "-" + *kv
	}
	return nil
}

// Subject returns the NATS subject of an event of type typ about release r:
// troupe.release.<namespace>.<release>.<event>, where <event> is typ without "release.".
func Subject(r Release, typ string) (string, error) {
	if err := r.Validate(); err != nil {
		return "", err
	}
	ev, err := subjectEvent(typ)
	if err != nil {
		return "", err
	}
	return releasePrefix + r.Namespace + "." + r.Name + "." + ev, nil
}

// ParseSubject is the inverse of Subject: it returns the release and the event type.
func ParseSubject(subject string) (Release, string, error) {
	rest, ok := strings.CutPrefix(subject, releasePrefix)
	if !ok {
		return Release{}, "", fmt.Errorf("%w: %q does not start with %q", ErrInvalidSubject, subject, releasePrefix)
	}
	parts := strings.SplitN(rest, ".", 3)
	if len(parts) != 3 || parts[2] == "" {
		return Release{}, "", fmt.Errorf("%w: %q is not %s<namespace>.<release>.<event>", ErrInvalidSubject, subject, releasePrefix)
	}
	r := Release{Namespace: parts[0], Name: parts[1]}
	if err := r.Validate(); err != nil {
		return Release{}, "", fmt.Errorf("%w: %q: %w", ErrInvalidSubject, subject, err)
	}
	typ := typePrefix + parts[2]
	if _, err := subjectEvent(typ); err != nil {
		return Release{}, "", fmt.Errorf("%w: %q: %w", ErrInvalidSubject, subject, err)
	}
	return r, typ, nil
}

// TypeFilter returns the subject filter that matches events of type typ for every release.
func TypeFilter(typ string) (string, error) {
	ev, err := subjectEvent(typ)
	if err != nil {
		return "", err
	}
	return releasePrefix + "*.*." + ev, nil
}

// ReleaseFilter returns the subject filter that matches every event of release r.
func ReleaseFilter(r Release) (string, error) {
	if err := r.Validate(); err != nil {
		return "", err
	}
	return releasePrefix + r.Namespace + "." + r.Name + ".>", nil
}

// DeadLetterSubject returns where service dead-letters a message that arrived on subject:
// troupe.dlq.<service>.<subject without "troupe.">.
func DeadLetterSubject(service, subject string) string {
	rest := strings.TrimPrefix(subject, SubjectRoot+".")
	if rest == "" {
		rest = "unknown"
	}
	return deadLetterPrefix + service + "." + rest
}

// subjectEvent returns the event part of a subject for typ, checking that typ is a valid
// release event type: "release." followed by dot-separated lower-case words. Types outside the
// catalog are allowed here so that user subscribers can add their own.
func subjectEvent(typ string) (string, error) {
	ev, ok := strings.CutPrefix(typ, typePrefix)
	if !ok || ev == "" {
		return "", fmt.Errorf("%w: %q does not start with %q", ErrUnknownType, typ, typePrefix)
	}
	for _, tok := range strings.Split(ev, ".") {
		if !eventToken(tok) {
			return "", fmt.Errorf("%w: %q: each dot-separated part must be lower-case letters, digits and '-'", ErrUnknownType, typ)
		}
	}
	return ev, nil
}

func eventToken(tok string) bool {
	if tok == "" || len(tok) > MaxNameLength {
		return false
	}
	for _, c := range tok {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}
