package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/historyapi"
)

// TestOverdue: a revision still in flight 30 s past its timeout names the service that has not
// answered (nothing else ends it when that service is not running); within its time, finished, or
// during a rollback, nothing is said.
func TestOverdue(t *testing.T) {
	now := time.Now()
	long := now.Add(-10 * time.Minute)
	assert.Contains(t, overdue(historyapi.StateRequested, long, 5*time.Minute, now), "no release.rendered within its 5m0s timeout: is the renderer running?")
	assert.Contains(t, overdue(historyapi.StateRendered, long, 5*time.Minute, now), "is the applier running?")
	assert.Contains(t, overdue(historyapi.StateProgressing, long, 5*time.Minute, now), "no release.ready or release.failed")
	assert.Empty(t, overdue(historyapi.StateRequested, now.Add(-5*time.Minute-20*time.Second), 5*time.Minute, now), "the services have 30 s to report")
	assert.Empty(t, overdue(historyapi.StateFailed, long, 5*time.Minute, now))
	assert.Empty(t, overdue(historyapi.StateReady, long, 5*time.Minute, now))

	v := &historyapi.View{Release: "demo/hello", Revisions: []*historyapi.Revision{
		{Revision: 1, State: historyapi.StateReady, Request: &historyapi.RequestInfo{}, Times: historyapi.Times{Requested: long}},
		{Revision: 2, State: historyapi.StateRequested, Request: &historyapi.RequestInfo{Options: events.Options{Timeout: events.Duration(time.Minute)}}, Times: historyapi.Times{Requested: now.Add(-2 * time.Minute)}},
	}}
	got := rows(v)
	assert.Empty(t, got[0].Overdue)
	assert.Contains(t, got[1].Overdue, "within its 1m0s timeout: is the renderer running?")
	assert.Contains(t, describe(got[1]), "requested, overdue: no release.rendered")

	assert.Equal(t, "requested (overdue: troupe status)", listState(historyapi.Summary{State: historyapi.StateRequested, Requested: long}, now), "default timeout 5m")
	assert.Equal(t, "requested", listState(historyapi.Summary{State: historyapi.StateRequested, Requested: long, Timeout: events.Duration(time.Hour)}, now))
	assert.Equal(t, "uninstalled", listState(historyapi.Summary{State: historyapi.StateReady, Uninstalled: true}, now))

	v.Rollback = &historyapi.Rollback{Target: 1, From: 2}
	assert.Empty(t, rows(v)[1].Overdue, "a rollback in flight has its own clock")
}
