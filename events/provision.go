package events

import (
	"context"
	"errors"
	"fmt"
	"slices"
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

// The object stores, shared by the live system and every sandbox: content-addressed.
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
	// Replicas of every stream and bucket: 1 in dev, 3 on a cluster. Default 1.
	Replicas int
	// MaxAge bounds how long events (and dead letters) are kept, so replay works that far back.
	// Default 30 days.
	MaxAge time.Duration
	// Duplicates is the window in which an event id is stored only once. Default 2 minutes.
	Duplicates time.Duration
	// Storage is file (default) or memory.
	Storage jetstream.StorageType
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
}

// Provision creates or updates the events stream, the dead-letter stream, the object stores and the
// KV buckets, idempotently: what already matches cfg is left alone (Unchanged), what differs is
// updated in place, keeping its data. Every service may call it at start.
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
		action, err := ensureStream(ctx, js, sc)
		if err != nil {
			return out, err
		}
		out = append(out, Provisioned{Kind: "stream", Name: sc.Name, Action: action})
	}
	for _, b := range []string{BucketBundles, BucketSources} {
		action, err := ensureBucket(ctx, js, "OBJ_"+b, cfg, func() error {
			_, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
				Bucket: b, Storage: cfg.Storage, Replicas: cfg.Replicas, TTL: cfg.MaxAge, Compression: true,
			})
			return err
		})
		if err != nil {
			return out, fmt.Errorf("object store %s: %w", b, err)
		}
		out = append(out, Provisioned{Kind: "objectstore", Name: b, Action: action})
	}
	for _, kv := range []jetstream.KeyValueConfig{
		{Bucket: KVLeases, Description: "per-release leases", History: 1, LimitMarkerTTL: time.Minute},
		{Bucket: KVReleases, Description: "per-release shared state", History: 5},
		{Bucket: KVInventory, Description: "applied inventories per revision", History: 1},
		{Bucket: KVHistory, Description: "history views", History: 1},
		{Bucket: KVHealth, Description: "releases the health watcher follows", History: 1},
		{Bucket: KVFlows, Description: "per-flow deadlines and terminal events", History: 1, TTL: FlowRetention},
	} {
		kv.Bucket = cfg.Names.KV(kv.Bucket)
		kv.Storage, kv.Replicas = cfg.Storage, cfg.Replicas
		action, err := ensureBucket(ctx, js, "KV_"+kv.Bucket, cfg, func() error {
			_, err := js.CreateOrUpdateKeyValue(ctx, kv)
			return err
		})
		if err != nil {
			return out, fmt.Errorf("kv %s: %w", kv.Bucket, err)
		}
		out = append(out, Provisioned{Kind: "kv", Name: kv.Bucket, Action: action})
	}
	return out, nil
}

func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) (string, error) {
	s, err := js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err := js.CreateStream(ctx, want); err != nil {
			return "", fmt.Errorf("create stream %s: %w", want.Name, err)
		}
		return Created, nil
	}
	if err != nil {
		return "", fmt.Errorf("stream %s: %w", want.Name, err)
	}
	have := s.CachedInfo().Config
	if slices.Equal(have.Subjects, want.Subjects) && have.MaxAge == want.MaxAge && have.Replicas == want.Replicas &&
		have.Duplicates == want.Duplicates && have.Storage == want.Storage && have.Description == want.Description &&
		have.MaxMsgSize == want.MaxMsgSize {
		return Unchanged, nil
	}
	if _, err := js.UpdateStream(ctx, want); err != nil {
		return "", fmt.Errorf("update stream %s: %w", want.Name, err)
	}
	return Updated, nil
}

// ensureBucket creates or updates a KV or object store bucket through apply, unless its stream
// already has the replicas and max age asked for.
func ensureBucket(ctx context.Context, js jetstream.JetStream, stream string, cfg ProvisionConfig, apply func() error) (string, error) {
	s, err := js.Stream(ctx, stream)
	action := Created
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
	case err != nil:
		return "", err
	default:
		have := s.CachedInfo().Config
		// KV buckets keep no age limit (their entries are state, not a log) but the flows'
		// which outlive any flow's deadline; object stores do.
		wantAge := time.Duration(0)
		switch {
		case stream[:4] == "OBJ_":
			wantAge = cfg.MaxAge
		case stream == "KV_"+cfg.Names.KV(KVFlows):
			wantAge = FlowRetention
		}
		if have.Replicas == cfg.Replicas && have.MaxAge == wantAge && have.Storage == cfg.Storage {
			return Unchanged, nil
		}
		action = Updated
	}
	if err := apply(); err != nil {
		return "", err
	}
	return action, nil
}
