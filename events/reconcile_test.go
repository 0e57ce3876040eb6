package events

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
)

func TestReconcile(t *testing.T) {
	const day = 24 * time.Hour
	r3 := settings{Replicas: 3, MaxAge: 90 * day, Duplicates: 2 * time.Minute}
	for _, tc := range []struct {
		name          string
		have, want    settings
		lower         bool
		got           settings
		changed, kept []string
	}{
		{name: "same", have: r3, want: r3, got: r3},
		{name: "defaults after R3: kept", have: r3, want: settings{Replicas: 1, MaxAge: 30 * day, Duplicates: 2 * time.Minute}, got: r3,
			kept: []string{"replicas 3 (asked 1)", "max age 2160h0m0s (asked 720h0m0s)"}},
		{name: "defaults after R3, lower asked", have: r3, want: settings{Replicas: 1, MaxAge: 30 * day, Duplicates: time.Minute}, lower: true,
			got:     settings{Replicas: 1, MaxAge: 30 * day, Duplicates: time.Minute},
			changed: []string{"replicas 3 → 1", "max age 2160h0m0s → 720h0m0s", "duplicate window 2m0s → 1m0s"}},
		{name: "raised and lengthened", have: settings{Replicas: 1, MaxAge: 30 * day, Duplicates: time.Minute}, want: r3, got: r3,
			changed: []string{"replicas 1 → 3", "max age 720h0m0s → 2160h0m0s", "duplicate window 1m0s → 2m0s"}},
		{name: "a TTL lifted: forever is longer", have: settings{Replicas: 1, MaxAge: 30 * day}, want: settings{Replicas: 1},
			got: settings{Replicas: 1}, changed: []string{"max age 720h0m0s → none"}},
		{name: "forever kept", have: settings{Replicas: 1}, want: settings{Replicas: 1, MaxAge: day},
			got: settings{Replicas: 1}, kept: []string{"max age none (asked 24h0m0s)"}},
		{name: "storage stays", have: settings{Replicas: 1, Storage: jetstream.FileStorage}, want: settings{Replicas: 1, Storage: jetstream.MemoryStorage}, lower: true,
			got: settings{Replicas: 1, Storage: jetstream.FileStorage}, kept: []string{"storage File (asked Memory: a stream cannot change it in place)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, changed, kept := reconcile(tc.have, tc.want, tc.lower)
			assert.Equal(t, tc.got, got)
			assert.Equal(t, tc.changed, changed)
			assert.Equal(t, tc.kept, kept)
		})
	}
}
