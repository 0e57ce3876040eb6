package applier

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// TestRetryFits: a failure is tried again only while the retry, even coming late, still finds
// the deadline ahead of it.
func TestRetryFits(t *testing.T) {
	now := time.Date(2026, 12, 3, 5, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		delay    time.Duration
		deadline time.Duration // from now
		fits     bool
	}{
		{"plenty of time", 200 * time.Millisecond, 10 * time.Second, true},
		{"room for the retry and the slack", 200 * time.Millisecond, 701 * time.Millisecond, true},
		{"room for the retry but not for it coming late", 200 * time.Millisecond, 600 * time.Millisecond, false},
		{"a long backoff leaves as much again", 5 * time.Second, 9 * time.Second, false},
		{"a long backoff with room twice over", 5 * time.Second, 11 * time.Second, true},
		{"past the deadline", 0, -time.Second, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.fits, retryFits(now, tc.delay, now.Add(tc.deadline)))
		})
	}
}
