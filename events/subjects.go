package events

import (
	"fmt"
	"strings"
)

// Names are the subjects, streams and KV buckets of one troupe system: the live one (the zero
// value) or a sandbox beside it (NewNames). Everything of this package that reaches NATS carries
// one — the Publisher, the Subscriber, Revisions, Leases, Provision — as nats.go's JetStream
// carries its API prefix, so a process can work in several systems at once.
//
// Subject layout: <root>.release.<namespace>.<release>.<event>, where <root> is "troupe", or
// "<prefix>.troupe" in a sandbox. Release names and namespaces are DNS-1123 labels, so they never
// contain a dot and always take exactly one subject token; the event part may take several
// ("rollback.requested").
type Names struct {
	prefix string
}

// NewNames returns the names of the sandbox prefix: subjects <prefix>.troupe.…, streams
// <PREFIX>_TROUPE and <PREFIX>_TROUPE_DLQ, KV buckets and object stores <prefix>-troupe-… (its
// own, so what its history prunes is never the live system's; `troupe replay --to` copies in
// the charts and bundles the replayed events reference).
// `troupe replay --to PREFIX` fills such a sandbox; `troupe dev --subjects-prefix PREFIX` runs
// the services in it. An empty prefix is the live system (the zero Names).
func NewNames(prefix string) (Names, error) {
	if prefix == "" {
		return Names{}, nil
	}
	for _, tok := range strings.Split(prefix, ".") {
		if tok == "" || len(tok) > MaxNameLength || strings.Trim(tok, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
			return Names{}, fmt.Errorf("subjects prefix %q: want dot-separated lower-case words (letters, digits, '-')", prefix)
		}
	}
	if prefix == "troupe" || strings.HasPrefix(prefix, "troupe.") {
		return Names{}, fmt.Errorf("subjects prefix %q: would share troupe's live subjects", prefix)
	}
	return Names{prefix: prefix}, nil
}

// Prefix is the sandbox prefix; empty for the live system.
func (n Names) Prefix() string { return n.prefix }

// Root is the first token(s) of every subject: "troupe", or "<prefix>.troupe" in a sandbox.
func (n Names) Root() string {
	if n.prefix == "" {
		return "troupe"
	}
	return n.prefix + ".troupe"
}

// ReleaseSubjects matches every release event: the events stream's subjects.
func (n Names) ReleaseSubjects() string { return n.Root() + ".release.>" }

// DeadLetterSubjects matches every dead letter: the dead-letter stream's subjects.
func (n Names) DeadLetterSubjects() string { return n.Root() + ".dlq.>" }

// Stream is the name of the events stream, on ReleaseSubjects: StreamName, or
// <PREFIX>_TROUPE in a sandbox.
func (n Names) Stream() string {
	if n.prefix == "" {
		return StreamName
	}
	return strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(n.prefix)) + "_" + StreamName
}

// DeadLetterStream is the name of the dead-letter stream, on DeadLetterSubjects.
func (n Names) DeadLetterStream() string { return n.Stream() + "_DLQ" }

// KV is the name of KV bucket base (KVLeases, KVReleases, …) in this system: base itself, or
// <prefix>-base in a sandbox.
func (n Names) KV(base string) string {
	if n.prefix == "" {
		return base
	}
	return strings.ReplaceAll(n.prefix, ".", "-") + "-" + base
}

// Objects is the name of object store base (BucketBundles, BucketSources) in this system: base
// itself, or <prefix>-base in a sandbox. A sandbox has its own stores, so its history prunes only
// its own bundles; `troupe replay --to` copies into them what the replayed events reference.
func (n Names) Objects(base string) string { return n.KV(base) }

func (n Names) releasePrefix() string { return n.Root() + ".release." }

const typePrefix = "release."

// Subject returns the NATS subject of an event of type typ about release r:
// <root>.release.<namespace>.<release>.<event>, where <event> is typ without "release.".
func (n Names) Subject(r Release, typ string) (string, error) {
	if err := r.Validate(); err != nil {
		return "", err
	}
	ev, err := subjectEvent(typ)
	if err != nil {
		return "", err
	}
	if IsVerdict(typ) {
		return "", fmt.Errorf("%w: a %s is published on its gate's subject (VerdictSubject)", ErrUnknownType, typ)
	}
	return n.releasePrefix() + r.Namespace + "." + r.Name + "." + ev, nil
}

// ParseSubject is the inverse of Subject: it returns the release and the event type.
func (n Names) ParseSubject(subject string) (Release, string, error) {
	prefix := n.releasePrefix()
	rest, ok := strings.CutPrefix(subject, prefix)
	if !ok {
		return Release{}, "", fmt.Errorf("%w: %q does not start with %q", ErrInvalidSubject, subject, prefix)
	}
	parts := strings.SplitN(rest, ".", 3)
	if len(parts) != 3 || parts[2] == "" {
		return Release{}, "", fmt.Errorf("%w: %q is not %s<namespace>.<release>.<event>", ErrInvalidSubject, subject, prefix)
	}
	r := Release{Namespace: parts[0], Name: parts[1]}
	if err := r.Validate(); err != nil {
		return Release{}, "", fmt.Errorf("%w: %q: %w", ErrInvalidSubject, subject, err)
	}
	typ := typePrefix + parts[2]
	// A gate's verdict: <approved|rejected>.<gate>. (Bare, it is no subject of troupe's.)
	if verdict, gate, ok := strings.Cut(parts[2], "."); ok && IsVerdict(typePrefix+verdict) {
		if err := ValidateName("gate", gate); err != nil {
			return Release{}, "", fmt.Errorf("%w: %q: %w", ErrInvalidSubject, subject, err)
		}
		return r, typePrefix + verdict, nil
	}
	if IsVerdict(typ) {
		return Release{}, "", fmt.Errorf("%w: %q: a %s is published on %s<namespace>.<release>.%s.<gate>", ErrInvalidSubject, subject, typ, prefix, parts[2])
	}
	if _, err := subjectEvent(typ); err != nil {
		return Release{}, "", fmt.Errorf("%w: %q: %w", ErrInvalidSubject, subject, err)
	}
	return r, typ, nil
}

// TypeFilter returns the subject filter that matches events of type typ for every release.
func (n Names) TypeFilter(typ string) (string, error) {
	if IsVerdict(typ) {
		return n.VerdictFilter(typ, "*")
	}
	ev, err := subjectEvent(typ)
	if err != nil {
		return "", err
	}
	return n.releasePrefix() + "*.*." + ev, nil
}

// NameFilter returns the subject filter that matches every event of the releases called name,
// in any namespace.
func (n Names) NameFilter(name string) (string, error) {
	if err := ValidateName("release", name); err != nil {
		return "", err
	}
	return n.releasePrefix() + "*." + name + ".>", nil
}

// ReleaseFilter returns the subject filter that matches every event of release r.
func (n Names) ReleaseFilter(r Release) (string, error) {
	if err := r.Validate(); err != nil {
		return "", err
	}
	return n.releasePrefix() + r.Namespace + "." + r.Name + ".>", nil
}

// DeadLetterSubject returns where service dead-letters a message that arrived on subject:
// <root>.dlq.<service>.<subject without "<root>.">.
func (n Names) DeadLetterSubject(service, subject string) string {
	rest := strings.TrimPrefix(subject, n.Root()+".")
	if rest == "" {
		rest = "unknown"
	}
	return n.Root() + ".dlq." + service + "." + rest
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
