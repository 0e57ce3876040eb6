package events

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Names of what Provision creates in the live system; Names gives a sandbox's.
const (
	// StreamName is the live events stream (Names.Stream).
	StreamName = "TROUPE"

	// KVLeases holds per-release leases; keys expire on their own (per-key TTL).
	KVLeases = "troupe-leases"
	// KVReleases holds per-release state services share: latest requested revision, current one.
	KVReleases = "troupe-releases"
	// KVInventory holds what each revision applied, for prune and uninstall.
	KVInventory = "troupe-inventory"
	// KVHistory holds the history service's materialised views.
	KVHistory = "troupe-history"
	// KVHealth holds what the health watcher follows per release, so a restarted watcher resumes.
	KVHealth = "troupe-health"
)

// The object stores, content-addressed. A sandbox has its own (Names.Objects).
const (
	// BucketBundles is the object store of rendered manifest bundles.
	BucketBundles = "troupe-bundles"
	// BucketSources is the object store of uploaded charts and archives.
	BucketSources = "troupe-sources"
)

// ProvisionConfig sets what Provision creates. Zero values take the defaults named on each field.
type ProvisionConfig struct {
	// Names are the system to provision: the live one (zero value) or a sandbox.
	Names Names
	// Replicas of every stream and bucket Provision creates: 1 in dev, 3 on a cluster. Default 1.
	// One that exists with more keeps them, unless Lower.
	Replicas int
	// MaxAge bounds how long events (and dead letters) are kept, so replay works that far back.
	// Default 30 days. A stream that keeps them longer keeps doing so, unless Lower. Object
	// stores and KV buckets have no max age: what they hold is pruned by whoever owns it
	// (history deletes the bundles no kept revision has).
	MaxAge time.Duration
	// Duplicates is the window in which an event id is stored only once. Default 2 minutes. A
	// longer window that exists is kept, unless Lower.
	Duplicates time.Duration
	// Storage is file (default) or memory, for what Provision creates; what exists keeps its
	// storage (a stream cannot change it in place).
	Storage jetstream.StorageType
	// Lower lets Provision lower replicas and shorten the max age and duplicate window of what
	// exists to what this config asks. Without it Provision only raises and lengthens, so a
	// service restarted with default flags never weakens what an operator set up.
	Lower bool
}

func (c *ProvisionConfig) defaults() {
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.MaxAge <= 0 {
		c.MaxAge = 30 * 24 * time.Hour
	}
	if c.Duplicates <= 0 {
		c.Duplicates = 2 * time.Minute
	}
}

// Provision outcomes.
const (
	Created   = "created"
	Updated   = "updated"
	Unchanged = "unchanged"
)

// Provisioned says what Provision did with one stream or bucket.
type Provisioned struct {
	Kind   string // stream, kv, objectstore
	Name   string
	Action string // created, updated, unchanged
	// Changed lists the settings it changed ("replicas 1 → 3"), for Updated.
	Changed []string
	// Kept lists the settings it left although the config asked otherwise, because changing them
	// would lower replicas or shorten retention without ProvisionConfig.Lower, or cannot be done
	// in place ("replicas 3 (asked 1)").
	Kept []string
}

// String reads as a log line: "stream TROUPE updated: replicas 1 → 3; kept max age 2160h0m0s (asked 720h0m0s)".
func (p Provisioned) String() string {
	s := p.Kind + " " + p.Name + " " + p.Action
	sep := ": "
	if len(p.Changed) > 0 {
		s += sep + strings.Join(p.Changed, ", ")
		sep = "; "
	}
	if len(p.Kept) > 0 {
		s += sep + "kept " + strings.Join(p.Kept, ", ")
	}
	return s
}

// provisionBuckets are the KV buckets Provision makes, by base name (Names.KV gives a system's).
// One more is one more line here.
func provisionBuckets() []jetstream.KeyValueConfig {
	return []jetstream.KeyValueConfig{
		{Bucket: KVLeases, Description: "per-release leases", History: 1, LimitMarkerTTL: time.Minute},
		{Bucket: KVReleases, Description: "per-release shared state", History: 5},
		{Bucket: KVInventory, Description: "applied inventories per revision", History: 1},
		{Bucket: KVHistory, Description: "history views", History: 1},
		{Bucket: KVHealth, Description: "releases the health watcher follows", History: 1},
		{Bucket: KVFlows, Description: "per-flow deadlines and terminal events", History: 1, TTL: FlowRetention},
		{Bucket: KVGates, Description: "per-namespace gate policy: the gates its releases must pass", History: 5},
	}
}

// provisionObjects are the object stores Provision makes, by base name (Names.Objects gives a
// system's). They have no TTL: a bundle or chart lives as long as a kept revision needs it.
func provisionObjects() []jetstream.ObjectStoreConfig {
	return []jetstream.ObjectStoreConfig{
		{Bucket: BucketBundles, Description: "rendered bundles by sha256 digest", Compression: true},
		{Bucket: BucketSources, Description: "uploaded charts and archives by sha256 digest", Compression: true},
	}
}

// Provision creates or updates the events stream, the dead-letter stream, the object stores and the
// KV buckets, idempotently, keeping their data, and says what it did with each. What is missing is
// created as cfg says. What exists is raised to cfg's replicas and lengthened to its max age and
// duplicate window, never lowered or shortened unless cfg.Lower; object stores and KV buckets lose
// any max age they had (an object store made before bundles stopped expiring). Every service may
// call it at start.
func Provision(ctx context.Context, js jetstream.JetStream, cfg ProvisionConfig) ([]Provisioned, error) {
	cfg.defaults()
	var out []Provisioned
	streams := []jetstream.StreamConfig{
		{
			Name: cfg.Names.Stream(), Description: "troupe release events",
			Subjects: []string{cfg.Names.ReleaseSubjects()}, Storage: cfg.Storage, Replicas: cfg.Replicas,
			MaxAge: cfg.MaxAge, Duplicates: cfg.Duplicates, Retention: jetstream.LimitsPolicy,
			Discard: jetstream.DiscardOld, MaxMsgSize: 1 << 20,
		},
		{
			Name: cfg.Names.DeadLetterStream(), Description: "troupe dead letters: events a service gave up on, with the reason",
			Subjects: []string{cfg.Names.DeadLetterSubjects()}, Storage: cfg.Storage, Replicas: cfg.Replicas,
			MaxAge: cfg.MaxAge, Duplicates: cfg.Duplicates, Retention: jetstream.LimitsPolicy,
			Discard: jetstream.DiscardOld, MaxMsgSize: 2 << 20,
		},
	}
	for _, sc := range streams {
		var p Provisioned
		err := whilePlacing(ctx, func() (err error) { p, err = ensureStream(ctx, js, sc, cfg.Lower); return err })
		if err != nil {
			return out, err
		}
		out = append(out, p)
	}
	for _, oc := range provisionObjects() {
		oc.Bucket = cfg.Names.Objects(oc.Bucket)
		var p Provisioned
		err := whilePlacing(ctx, func() (err error) {
			p, err = ensureBucket(ctx, js, "objectstore", oc.Bucket, "OBJ_"+oc.Bucket, 0, cfg, func(replicas int, storage jetstream.StorageType) error {
				oc.Replicas, oc.Storage = replicas, storage
				_, err := js.CreateOrUpdateObjectStore(ctx, oc)
				return err
			})
			return err
		})
		if err != nil {
			return out, fmt.Errorf("object store %s: %w", oc.Bucket, err)
		}
		out = append(out, p)
	}
	for _, kv := range provisionBuckets() {
		kv.Bucket = cfg.Names.KV(kv.Bucket)
		var p Provisioned
		err := whilePlacing(ctx, func() (err error) {
			p, err = ensureBucket(ctx, js, "kv", kv.Bucket, "KV_"+kv.Bucket, kv.TTL, cfg, func(replicas int, storage jetstream.StorageType) error {
				kv.Replicas, kv.Storage = replicas, storage
				_, err := js.CreateOrUpdateKeyValue(ctx, kv)
				return err
			})
			return err
		})
		if err != nil {
			return out, fmt.Errorf("kv %s: %w", kv.Bucket, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// errNoPeers is JetStream's "no suitable peers for placement": a cluster still forming, or a
// peer that a loaded machine made miss its heartbeats for a moment.
const errNoPeers = 10005

// placementWait bounds how long whilePlacing tries again.
const placementWait = 30 * time.Second

// whilePlacing runs f, again while JetStream finds no peers to place replicas on (errNoPeers),
// for up to placementWait: a service started beside a cluster that is forming waits for it
// rather than exit.
func whilePlacing(ctx context.Context, f func() error) error {
	return retryWhile(ctx, placementWait, 2*time.Second, func(err error) bool {
		var apiErr *jetstream.APIError
		return errors.As(err, &apiErr) && apiErr.ErrorCode == errNoPeers
	}, f)
}

// settings is what provisioning may change of a stream that exists.
type settings struct {
	Replicas   int
	MaxAge     time.Duration // 0: no limit
	Duplicates time.Duration
	Storage    jetstream.StorageType
}

// reconcile decides the settings a stream that has have gets when want is asked: replicas, max
// age and duplicate window are raised or lengthened to want's, lowered or shortened only if
// lower; storage stays (JetStream cannot change it in place). It says what changes and what is
// kept against the ask.
func reconcile(have, want settings, lower bool) (got settings, changed, kept []string) {
	got = have
	if want.Replicas != have.Replicas {
		if want.Replicas > have.Replicas || lower {
			got.Replicas = want.Replicas
			changed = append(changed, fmt.Sprintf("replicas %d → %d", have.Replicas, want.Replicas))
		} else {
			kept = append(kept, fmt.Sprintf("replicas %d (asked %d)", have.Replicas, want.Replicas))
		}
	}
	if want.MaxAge != have.MaxAge {
		if ageLonger(want.MaxAge, have.MaxAge) || lower {
			got.MaxAge = want.MaxAge
			changed = append(changed, fmt.Sprintf("max age %s → %s", ageString(have.MaxAge), ageString(want.MaxAge)))
		} else {
			kept = append(kept, fmt.Sprintf("max age %s (asked %s)", ageString(have.MaxAge), ageString(want.MaxAge)))
		}
	}
	if want.Duplicates != have.Duplicates {
		if want.Duplicates > have.Duplicates || lower {
			got.Duplicates = want.Duplicates
			changed = append(changed, fmt.Sprintf("duplicate window %s → %s", have.Duplicates, want.Duplicates))
		} else {
			kept = append(kept, fmt.Sprintf("duplicate window %s (asked %s)", have.Duplicates, want.Duplicates))
		}
	}
	if want.Storage != have.Storage {
		kept = append(kept, fmt.Sprintf("storage %s (asked %s: a stream cannot change it in place)", have.Storage, want.Storage))
	}
	return got, changed, kept
}

// ageLonger reports whether max age a keeps messages longer than b (0 is forever).
func ageLonger(a, b time.Duration) bool { return b != 0 && (a == 0 || a > b) }

func ageString(d time.Duration) string {
	if d == 0 {
		return "none"
	}
	return d.String()
}

func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig, lower bool) (Provisioned, error) {
	p := Provisioned{Kind: "stream", Name: want.Name, Action: Created}
	s, err := js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err := js.CreateStream(ctx, want); err != nil {
			return p, fmt.Errorf("create stream %s: %w", want.Name, err)
		}
		return p, nil
	}
	if err != nil {
		return p, fmt.Errorf("stream %s: %w", want.Name, err)
	}
	have := s.CachedInfo().Config
	got, changed, kept := reconcile(
		settings{Replicas: have.Replicas, MaxAge: have.MaxAge, Duplicates: have.Duplicates, Storage: have.Storage},
		settings{Replicas: want.Replicas, MaxAge: want.MaxAge, Duplicates: want.Duplicates, Storage: want.Storage}, lower)
	// What troupe's code defines (not an operator's setting) follows the code.
	if !slices.Equal(have.Subjects, want.Subjects) {
		changed = append(changed, fmt.Sprintf("subjects %v → %v", have.Subjects, want.Subjects))
	}
	if have.Description != want.Description {
		changed = append(changed, "description")
	}
	if have.MaxMsgSize != want.MaxMsgSize {
		changed = append(changed, fmt.Sprintf("max message size %d → %d", have.MaxMsgSize, want.MaxMsgSize))
	}
	p.Kept = kept
	if len(changed) == 0 {
		p.Action = Unchanged
		return p, nil
	}
	want.Replicas, want.MaxAge, want.Duplicates, want.Storage = got.Replicas, got.MaxAge, got.Duplicates, got.Storage
	if _, err := js.UpdateStream(ctx, want); err != nil {
		return p, fmt.Errorf("update stream %s: %w", want.Name, err)
	}
	p.Action, p.Changed = Updated, changed
	return p, nil
}

// ensureBucket creates a KV or object store bucket through apply, or updates it when its stream
// differs from what cfg asks (by reconcile: its max age is maxAge, the bucket's own — none but
// for the flows' records; replicas only go up unless cfg.Lower).
func ensureBucket(ctx context.Context, js jetstream.JetStream, kind, name, stream string, maxAge time.Duration, cfg ProvisionConfig,
	apply func(replicas int, storage jetstream.StorageType) error) (Provisioned, error) {
	p := Provisioned{Kind: kind, Name: name, Action: Created}
	s, err := js.Stream(ctx, stream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return p, apply(cfg.Replicas, cfg.Storage)
	case err != nil:
		return p, err
	}
	have := s.CachedInfo().Config
	// A bucket's max age is never kept: lifting it only lengthens what is kept.
	got, changed, kept := reconcile(
		settings{Replicas: have.Replicas, MaxAge: have.MaxAge, Storage: have.Storage},
		settings{Replicas: cfg.Replicas, MaxAge: maxAge, Storage: cfg.Storage}, cfg.Lower)
	p.Kept = kept
	if len(changed) == 0 {
		p.Action = Unchanged
		return p, nil
	}
	if err := apply(got.Replicas, got.Storage); err != nil {
		return p, err
	}
	p.Action, p.Changed = Updated, changed
	return p, nil
}
