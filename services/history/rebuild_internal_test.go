package history

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/historyapi"
)

func TestRebuildFrom(t *testing.T) {
	rel := events.Release{Namespace: "prod", Name: "web"}
	have := &historyapi.View{Release: "prod/web", Current: 3, Sequence: 40}
	for _, tc := range []struct {
		name                      string
		have                      *historyapi.View
		firstRequest, streamFirst uint64
		keep                      bool
	}{
		{name: "no view: from nothing", firstRequest: 5, streamFirst: 10},
		{name: "the stream lost nothing", have: have, firstRequest: 5, streamFirst: 1, keep: false},
		{name: "its first request still in the stream", have: have, firstRequest: 10, streamFirst: 10, keep: false},
		{name: "its first request aged out", have: have, firstRequest: 5, streamFirst: 10, keep: true},
		{name: "no request numbered, the stream lost some", have: have, firstRequest: 0, streamFirst: 10, keep: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := rebuildFrom(rel, tc.have, tc.firstRequest, tc.streamFirst)
			if tc.keep {
				assert.Same(t, tc.have, got)
			} else {
				assert.Equal(t, &historyapi.View{Release: "prod/web"}, got)
			}
		})
	}
}
