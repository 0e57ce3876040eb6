package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cdevents/sdk-go/pkg/api"
	cdevents04 "github.com/cdevents/sdk-go/pkg/api/v04"
	cdevents "github.com/cdevents/sdk-go/pkg/api/v05"
	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/access"
	"github.com/troupe-dev/troupe/events/natstest"
)

// system is an embedded nats-server with auth on, provisioned by the admin: the bridge connects
// as the subscriber identity, so every read it makes is one that identity may make.
type system struct {
	admin jetstream.JetStream // publishes troupe's events, as the services would
	sub   jetstream.JetStream // the bridge's: the subscriber identity
	pub   *events.Publisher
}

func startSystem(t *testing.T) *system {
	t.Helper()
	a := natstest.StartAuth(t)
	connect := func(identity string) jetstream.JetStream {
		nc, err := events.ConnOptions{Server: a.URL, CredsFile: a.Creds[identity]}.Connect("test-" + identity)
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		require.NoError(t, err)
		return js
	}
	sys := &system{admin: connect(access.Admin), sub: connect(access.Subscriber)}
	sys.pub = events.NewPublisher(sys.admin, events.Names{})
	return sys
}

// request publishes a request of release r: the start of a flow.
func (s *system) request(t *testing.T, r events.Release, typ string, data any) (event.Event, uint64) {
	t.Helper()
	e, err := events.NewEvent("troupe/cli", typ, r, data)
	require.NoError(t, err)
	return e, s.publish(t, e)
}

// react publishes what source says in reaction to cause, for revision.
func (s *system) react(t *testing.T, cause event.Event, source, typ string, data any, revision int) (event.Event, uint64) {
	t.Helper()
	e, err := events.Derive(cause, "troupe/"+source, typ, data)
	require.NoError(t, err)
	if revision > 0 {
		events.WithRevision(&e, revision)
	}
	return e, s.publish(t, e)
}

func (s *system) publish(t *testing.T, e event.Event) uint64 {
	t.Helper()
	ack, err := s.pub.Publish(t.Context(), e)
	require.NoError(t, err)
	return ack.Sequence
}

// install publishes a release.requested of r and its flow to ready as revision: rendered (chart,
// or a kustomization when chart is nil), applied, ready.
func (s *system) install(t *testing.T, r events.Release, revision int, chart *events.ChartInfo, bundle string) (req, ready event.Event) {
	t.Helper()
	src := events.Source{Helm: &events.HelmSource{Path: "charts/" + r.Name}}
	if chart == nil {
		src = events.Source{Kustomize: &events.KustomizeSource{Path: "deploy/" + r.Name}}
	}
	req, _ = s.request(t, r, events.TypeRequested, events.Requested{Source: src})
	rendered, _ := s.react(t, req, "renderer", events.TypeRendered, events.Rendered{Bundle: bundle, Size: 100, Chart: chart}, revision)
	applied, _ := s.react(t, rendered, "applier", events.TypeApplied, events.Applied{Bundle: bundle}, revision)
	ready, _ = s.react(t, applied, "health", events.TypeReady, events.Ready{Objects: 2, TimeToReady: events.Duration(time.Second)}, revision)
	return req, ready
}

// rollback publishes a release.rollback.requested of r to revision, and its flow to ready: history
// publishes the stored bundle again as release.rendered (Rollback), revision keeps its number.
func (s *system) rollback(t *testing.T, r events.Release, revision int, chart *events.ChartInfo, bundle string) (req, ready event.Event) {
	t.Helper()
	req, _ = s.request(t, r, events.TypeRollbackRequested, events.RollbackRequested{TargetRevision: revision})
	rendered, _ := s.react(t, req, "history", events.TypeRendered, events.Rendered{Bundle: bundle, Size: 100, Chart: chart, Rollback: true}, revision)
	applied, _ := s.react(t, rendered, "applier", events.TypeApplied, events.Applied{Bundle: bundle}, revision)
	ready, _ = s.react(t, applied, "health", events.TypeReady, events.Ready{Objects: 2}, revision)
	return req, ready
}

func digest(n int) string { return fmt.Sprintf("sha256:%064x", n) }

// run starts b and waits until it receives; the returned stop ends it and waits for Start,
// which must return nil.
func run(t *testing.T, b *Bridge) (stop func()) { return natstest.Run(t, b) }

// wire is what a test reads of a CDEvent: the fields the bridge sets.
type wire struct {
	Context struct {
		ID          string `json:"id"`
		Source      string `json:"source"`
		Type        string `json:"type"`
		SpecVersion string `json:"specversion"` // v0.5
		Version     string `json:"version"`     // v0.4
		ChainID     string `json:"chainId"`
		SchemaURI   string `json:"schemaUri"`
	} `json:"context"`
	Subject struct {
		ID      string `json:"id"`
		Content struct {
			ArtifactID  string `json:"artifactId"`
			Environment *struct {
				ID string `json:"id"`
			} `json:"environment"`
			DesiredState struct {
				ID string `json:"id"`
			} `json:"desiredState"`
			Target struct {
				ID   string `json:"id"`
				Type string `json:"type"`
			} `json:"target"`
			Changed *bool  `json:"changed"`
			Outcome string `json:"outcome"`
			Reason  string `json:"reason"`
		} `json:"content"`
	} `json:"subject"`
	CustomData troupeData `json:"customData"`
}

func wireOf(t *testing.T, cd api.CDEventReader) wire {
	t.Helper()
	b, err := api.AsJsonBytes(cd)
	require.NoError(t, err)
	var w wire
	require.NoError(t, json.Unmarshal(b, &w))
	return w
}

// sink is a CloudEvents HTTP receiver that reads every POST as a CDEvent and validates it with
// the CDEvents SDK, as a consumer would; it answers 500 while failing.
type sink struct {
	*httptest.Server
	failing atomic.Bool
	spec    string // the spec version it reads

	mu       sync.Mutex
	accepted []wire          // in the order they were accepted
	attempts map[string]int  // POSTs per CloudEvents id, failed ones too
	problems []string        // what was not a valid CDEvent
	modes    map[string]bool // the content modes seen: binary, structured
}

func startSink(t *testing.T, spec string) *sink {
	t.Helper()
	s := &sink{spec: spec, attempts: map[string]int{}, modes: map[string]bool{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *sink) serve(w http.ResponseWriter, r *http.Request) {
	mode := "binary"
	if r.Header.Get("Content-Type") == cloudevents.ApplicationCloudEventsJSON {
		mode = "structured"
	}
	ce, err := cloudevents.NewEventFromHTTPRequest(r)
	if err != nil {
		s.problem(w, "not a CloudEvent: %v", err)
		return
	}
	parse := cdevents.NewFromJsonBytes
	if s.spec == Spec04 {
		parse = cdevents04.NewFromJsonBytes // as Flux's CDEvents Receiver reads them
	}
	cd, err := parse(ce.Data())
	if err != nil {
		s.problem(w, "%s: not a CDEvent: %v", ce.ID(), err)
		return
	}
	if err := validate(cd); err != nil {
		s.problem(w, "%s: invalid: %v", ce.ID(), err)
		return
	}
	b, _ := api.AsJsonBytes(cd)
	var got wire
	if err := json.Unmarshal(b, &got); err != nil {
		s.problem(w, "%s: %v", ce.ID(), err)
		return
	}
	if ce.Type() != got.Context.Type || ce.ID() != got.Context.ID {
		s.problem(w, "CloudEvent %s %s carries CDEvent %s %s", ce.Type(), ce.ID(), got.Context.Type, got.Context.ID)
		return
	}
	if mode == "binary" && r.Header.Get("Ce-Type") != got.Context.Type {
		s.problem(w, "Ce-Type %q, CDEvent %s", r.Header.Get("Ce-Type"), got.Context.Type)
		return
	}
	if got.Context.SpecVersion+got.Context.Version != map[string]string{Spec05: "0.5.1", Spec04: "0.4.1"}[s.spec] {
		s.problem(w, "%s: spec %s%s", ce.ID(), got.Context.SpecVersion, got.Context.Version)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attempts[ce.ID()]++
	s.modes[mode] = true
	if s.failing.Load() {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	s.accepted = append(s.accepted, got)
	w.WriteHeader(http.StatusAccepted)
}

func (s *sink) problem(w http.ResponseWriter, format string, args ...any) {
	s.mu.Lock()
	s.problems = append(s.problems, fmt.Sprintf(format, args...))
	s.mu.Unlock()
	w.WriteHeader(http.StatusBadRequest)
}

// got returns what the sink accepted so far, and what it found wrong.
func (s *sink) got() ([]wire, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]wire(nil), s.accepted...), append([]string(nil), s.problems...)
}

// seenModes returns the content modes the sink was sent.
func (s *sink) seenModes() map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.modes)
}

func (s *sink) tries(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts[id]
}
