package events_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
)

func TestValidateName(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{"simple", "podinfo", ""},
		{"digits and dashes", "app-2", ""},
		{"one char", "a", ""},
		{"63 chars", strings.Repeat("a", 63), ""},
		{"empty", "", "is empty"},
		{"64 chars", strings.Repeat("a", 64), "at most 63"},
		{"upper case", "PodInfo", "lower-case"},
		{"dot", "pod.info", "lower-case"},
		{"leading dash", "-app", "start and end"},
		{"trailing dash", "app-", "start and end"},
		{"underscore", "my_app", "lower-case"},
		{"wildcard", "*", "lower-case"},
		{"subject wildcard", ">", "lower-case"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := events.ValidateName("release", tc.in)
			if tc.wantErr == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.ErrorIs(t, err, events.ErrInvalidName)
			assert.Contains(t, err.Error(), tc.wantErr)
			assert.Contains(t, err.Error(), "release", "the error names the field")
		})
	}
}

func TestParseRelease(t *testing.T) {
	r, err := events.ParseRelease("prod/podinfo")
	require.NoError(t, err)
	assert.Equal(t, events.Release{Namespace: "prod", Name: "podinfo"}, r)
	assert.Equal(t, "prod/podinfo", r.String())

	for _, bad := range []string{"podinfo", "prod/", "/podinfo", "Prod/podinfo", "prod/pod/info", "prod/pod.info"} {
		_, err := events.ParseRelease(bad)
		assert.ErrorIs(t, err, events.ErrInvalidName, bad)
	}
}

func TestSubjectRoundTrip(t *testing.T) {
	r := events.Release{Namespace: "prod", Name: "podinfo"}
	for _, spec := range events.Catalog() {
		t.Run(spec.Type, func(t *testing.T) {
			if events.IsVerdict(spec.Type) { // on its gate's subject: TestVerdictSubjects
				_, err := events.Names{}.Subject(r, spec.Type)
				assert.ErrorIs(t, err, events.ErrUnknownType)
				return
			}
			subj, err := events.Names{}.Subject(r, spec.Type)
			require.NoError(t, err)
			assert.Equal(t, "troupe.release.prod.podinfo."+strings.TrimPrefix(spec.Type, "release."), subj)
			gotR, gotT, err := events.Names{}.ParseSubject(subj)
			require.NoError(t, err)
			assert.Equal(t, r, gotR)
			assert.Equal(t, spec.Type, gotT)
		})
	}
	subj, err := events.Names{}.Subject(r, events.TypeRollbackRequested)
	require.NoError(t, err)
	assert.Equal(t, "troupe.release.prod.podinfo.rollback.requested", subj)
}

func TestSubjectErrors(t *testing.T) {
	_, err := events.Names{}.Subject(events.Release{Namespace: "prod", Name: "Bad"}, events.TypeRequested)
	assert.ErrorIs(t, err, events.ErrInvalidName)
	_, err = events.Names{}.Subject(events.Release{Namespace: "prod", Name: "ok"}, "requested")
	assert.ErrorIs(t, err, events.ErrUnknownType)
	_, err = events.Names{}.Subject(events.Release{Namespace: "prod", Name: "ok"}, "release.Bad Type")
	assert.ErrorIs(t, err, events.ErrUnknownType)

	for _, bad := range []string{
		"troupe.release.prod.podinfo", "troupe.release.prod", "other.release.prod.podinfo.requested",
		"troupe.release.PROD.podinfo.requested", "troupe.release.prod.podinfo.", "troupe.release.prod.podinfo.Requested",
	} {
		_, _, err := events.Names{}.ParseSubject(bad)
		assert.ErrorIs(t, err, events.ErrInvalidSubject, bad)
	}
}

func TestFilters(t *testing.T) {
	f, err := events.Names{}.TypeFilter(events.TypeRollbackRequested)
	require.NoError(t, err)
	assert.Equal(t, "troupe.release.*.*.rollback.requested", f)
	f, err = events.Names{}.ReleaseFilter(events.Release{Namespace: "dev", Name: "web"})
	require.NoError(t, err)
	assert.Equal(t, "troupe.release.dev.web.>", f)
	assert.Equal(t, "troupe.dlq.renderer.release.dev.web.requested", events.Names{}.DeadLetterSubject("renderer", "troupe.release.dev.web.requested"))
}

func TestDeriveID(t *testing.T) {
	a := events.DeriveID("corr-1", "troupe/renderer release.rendered")
	assert.Equal(t, a, events.DeriveID("corr-1", "troupe/renderer release.rendered"), "same inputs, same id")
	assert.NotEqual(t, a, events.DeriveID("corr-2", "troupe/renderer release.rendered"))
	assert.NotEqual(t, a, events.DeriveID("corr-1", "troupe/renderer release.failed"))
	// The separator keeps ("ab","c") and ("a","bc") apart.
	assert.NotEqual(t, events.DeriveID("ab", "c"), events.DeriveID("a", "bc"))
	assert.NotEqual(t, events.NewID(), events.NewID())
}

func TestTruncate(t *testing.T) {
	assert.Equal(t, "short", events.Truncate("short", 10))
	assert.Equal(t, "abcdefg...", events.Truncate("abcdefghijklmnop", 10))
	got := events.Truncate(strings.Repeat("é", 10), 10) // 2 bytes a rune: never cut in the middle
	assert.LessOrEqual(t, len(got), 10)
	assert.True(t, utf8.ValidString(got), got)
}
