package ui_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/natstest"
	"github.com/troupe-dev/troupe/services/history"
	"github.com/troupe-dev/troupe/services/history/ui"
)

var web = events.Release{Namespace: "demo", Name: "web"}

type env struct {
	t   *testing.T
	nc  *nats.Conn
	js  jetstream.JetStream
	srv *httptest.Server
}

// newEnv runs the history service on an embedded NATS and the UI in front of it, with an
// identity for requests unless readOnly.
func newEnv(t *testing.T, readOnly bool) *env {
	t.Helper()
	_, nc, js := natstest.Start(t)
	svc, err := history.New(t.Context(), js, history.Options{})
	require.NoError(t, err)
	natstest.Run(t, svc)
	o := ui.Options{JS: js, NC: nc, Query: svc.Answer, Requests: js}
	if readOnly {
		o.Requests = nil
	}
	u, err := ui.New(t.Context(), o)
	require.NoError(t, err)
	srv := httptest.NewServer(u)
	t.Cleanup(srv.Close)
	return &env{t: t, nc: nc, js: js, srv: srv}
}

// post sends a button's request; headers as the UI's pages send them unless given.
func (e *env) post(path, body string, header map[string]string) (int, map[string]any) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+ui.Prefix+"api/"+path, strings.NewReader(body))
	require.NoError(e.t, err)
	if header == nil {
		header = map[string]string{"Content-Type": "application/json", "X-Troupe-UI": "1", "Sec-Fetch-Site": "same-origin"}
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(e.t, err)
	defer res.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(res.Body).Decode(&out)
	return res.StatusCode, out
}

func (e *env) get(path string, v any) int {
	e.t.Helper()
	res, err := http.Get(e.srv.URL + ui.Prefix + "api/" + path)
	require.NoError(e.t, err)
	defer res.Body.Close()
	require.NoError(e.t, json.NewDecoder(res.Body).Decode(v))
	return res.StatusCode
}

// stored returns the events of type typ on the stream.
func (e *env) stored(typ string) []event.Event {
	e.t.Helper()
	subj, err := events.Names{}.Subject(web, typ)
	require.NoError(e.t, err)
	cons, err := e.js.OrderedConsumer(e.t.Context(), events.StreamName, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subj}})
	require.NoError(e.t, err)
	batch, err := cons.FetchNoWait(100)
	require.NoError(e.t, err)
	var out []event.Event
	for msg := range batch.Messages() {
		ev, err := events.Names{}.Decode(msg.Subject(), msg.Headers(), msg.Data())
		require.NoError(e.t, err)
		out = append(out, ev)
	}
	return out
}

// TestButtonsKeepTheRules: a button's request is published only from the UI's own pages (its
// header and a JSON body, not from another site) and only by a UI with an identity for
// requests; then it is the CLI's request, from troupe/ui.
func TestButtonsKeepTheRules(t *testing.T) {
	e := newEnv(t, false)
	for name, header := range map[string]map[string]string{
		"a form from anywhere":  {"Content-Type": "application/x-www-form-urlencoded"},
		"no UI header":          {"Content-Type": "application/json"},
		"another site":          {"Content-Type": "application/json", "X-Troupe-UI": "1", "Sec-Fetch-Site": "cross-site"},
		"another origin":        {"Content-Type": "application/json", "X-Troupe-UI": "1", "Origin": "https://evil.example"},
		"text, not JSON, typed": {"Content-Type": "text/plain", "X-Troupe-UI": "1"},
	} {
		code, body := e.post("releases/demo/web/rollback", `{"revision":1}`, header)
		assert.Equal(t, http.StatusForbidden, code, name)
		assert.NotEmpty(t, body["error"], name)
	}
	assert.Empty(t, e.stored(events.TypeRollbackRequested), "nothing published")

	code, body := e.post("releases/demo/web/rollback", `{"revision":1,"reason":"from a test"}`, nil)
	require.Equal(t, http.StatusOK, code, body)
	rbs := e.stored(events.TypeRollbackRequested)
	require.Len(t, rbs, 1)
	assert.Equal(t, ui.Source, rbs[0].Source())
	assert.Equal(t, body["id"], rbs[0].ID())
	d, err := events.Data[events.RollbackRequested](rbs[0])
	require.NoError(t, err)
	assert.Equal(t, 1, d.TargetRevision)

	code, _ = e.post("releases/demo/web/uninstall", `{}`, nil)
	require.Equal(t, http.StatusOK, code)
	assert.Len(t, e.stored(events.TypeUninstallRequested), 1)

	code, body = e.post("releases/demo/Not_A_Name/uninstall", `{}`, nil)
	assert.Equal(t, http.StatusBadRequest, code)
	assert.Contains(t, body["error"], "Not_A_Name")

	ro := newEnv(t, true)
	code, body = ro.post("releases/demo/web/uninstall", `{}`, nil)
	assert.Equal(t, http.StatusForbidden, code)
	assert.Contains(t, body["error"], "read-only")
	var info map[string]any
	ro.get("info", &info)
	assert.Equal(t, false, info["actions"])
	assert.NotEmpty(t, info["readOnly"])
}

// TestDeadLettersAndRedrive: the page's list shows each dead letter with its service, reason and
// original; a dead-lettered request is re-driven as a new request with its data, and a fact or
// an unreadable event is refused, saying why.
func TestDeadLettersAndRedrive(t *testing.T) {
	e := newEnv(t, false)
	names := events.Names{}
	deadLetter := func(service string, ev *event.Event, raw []byte) {
		t.Helper()
		subj, err := names.Subject(web, events.TypeRequested)
		require.NoError(t, err)
		body, seq := raw, uint64(0)
		if ev != nil {
			ack, err := events.NewPublisher(e.js, names).Publish(t.Context(), *ev) // the original, on the stream
			require.NoError(t, err)
			seq = ack.Sequence
			subj, err = names.Subject(web, ev.Type())
			require.NoError(t, err)
			body, err = events.Encode(*ev)
			require.NoError(t, err)
		}
		msg := nats.NewMsg(names.DeadLetterSubject(service, subj))
		msg.Data = body
		msg.Header.Set(events.HeaderDLQService, service)
		msg.Header.Set(events.HeaderDLQReason, "gave up: a test")
		msg.Header.Set(events.HeaderDLQSubject, subj)
		msg.Header.Set(events.HeaderDLQTime, time.Now().UTC().Format(time.RFC3339Nano))
		msg.Header.Set(events.HeaderDLQSequence, strconv.FormatUint(seq, 10))
		_, err = e.js.PublishMsg(t.Context(), msg)
		require.NoError(t, err)
	}
	req, err := events.NewEvent("troupe/cli", events.TypeRequested, web, events.Requested{
		Source: events.Source{Manifests: &events.ManifestsSource{Path: "deploy/"}}, RequestedBy: "ada"})
	require.NoError(t, err)
	rendered, err := events.Derive(req, "troupe/renderer", events.TypeRendered, events.Rendered{Bundle: "sha256:" + strings.Repeat("ab", 32)})
	require.NoError(t, err)
	deadLetter("renderer", &req, nil)
	deadLetter("applier", &rendered, nil)
	deadLetter("renderer", nil, []byte("not a cloudevent {"))

	var list []struct {
		Sequence  uint64          `json:"sequence"`
		Service   string          `json:"service"`
		Reason    string          `json:"reason"`
		Type      string          `json:"type"`
		Event     json.RawMessage `json:"event"`
		Raw       string          `json:"raw"`
		Redrive   string          `json:"redrive"`
		NoRedrive string          `json:"noRedrive"`
	}
	require.Equal(t, http.StatusOK, e.get("deadletters", &list))
	require.Len(t, list, 3)
	assert.Equal(t, "not a cloudevent {", list[0].Raw, "newest first, the original bytes kept")
	assert.Contains(t, list[0].NoRedrive, "cannot be read")
	assert.Equal(t, events.TypeRequested, list[0].Type, "what its subject says")
	assert.Equal(t, events.TypeRendered, list[1].Type)
	assert.Contains(t, list[1].NoRedrive, "is a fact")
	assert.Equal(t, "renderer", list[2].Service)
	assert.Equal(t, "gave up: a test", list[2].Reason)
	assert.Contains(t, string(list[2].Event), `"requestedBy":"ada"`)
	require.NotEmpty(t, list[2].Redrive)

	code, body := e.post(strings.TrimPrefix(list[2].Redrive, ui.Prefix+"api/"), `{}`, nil)
	require.Equal(t, http.StatusOK, code, body)
	reqs := e.stored(events.TypeRequested)
	require.Len(t, reqs, 2, "the original and the re-driven one")
	assert.NotEqual(t, req.ID(), reqs[1].ID())
	assert.Equal(t, ui.Source, reqs[1].Source())
	d, err := events.Data[events.Requested](reqs[1])
	require.NoError(t, err)
	assert.Equal(t, "ada", d.RequestedBy)

	code, body = e.post("deadletters/"+jsonNum(list[1].Sequence)+"/redrive", `{}`, nil)
	assert.Equal(t, http.StatusUnprocessableEntity, code)
	assert.Contains(t, body["error"], "is a fact")
	code, body = e.post(strings.TrimPrefix(list[2].Redrive, ui.Prefix+"api/"), `{}`, nil)
	assert.Equal(t, http.StatusUnprocessableEntity, code, "a second re-drive: the first is a newer request")
	assert.Contains(t, body["error"], "a newer release.requested")
	code, _ = e.post("deadletters/999/redrive", `{}`, nil)
	assert.Equal(t, http.StatusNotFound, code)
}

func jsonNum(n uint64) string { b, _ := json.Marshal(n); return string(b) }

// TestLiveFeed: an open page hears of each event as it is stored, and of each dead letter.
func TestLiveFeed(t *testing.T) {
	e := newEnv(t, false)
	res, err := http.Get(e.srv.URL + ui.Prefix + "api/live")
	require.NoError(t, err)
	defer res.Body.Close()
	assert.Equal(t, "text/event-stream", res.Header.Get("Content-Type"))
	notices := make(chan ui.Notice, 16)
	go func() {
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var n ui.Notice
				if json.Unmarshal([]byte(data), &n) == nil {
					notices <- n
				}
			}
		}
	}()
	// The feed reads from the newest message on: publish until a notice comes (the feed's
	// consumer may start after the first publish), then check what it says.
	pub := events.NewPublisher(e.js, events.Names{})
	var got ui.Notice
	require.Eventually(t, func() bool {
		ev, err := events.NewEvent("troupe/cli", events.TypeRequested, web, events.Requested{
			Source: events.Source{Manifests: &events.ManifestsSource{Path: "deploy/"}}})
		require.NoError(t, err)
		_, err = pub.Publish(t.Context(), ev)
		require.NoError(t, err)
		select {
		case got = <-notices:
			return true
		case <-time.After(500 * time.Millisecond):
			return false
		}
	}, 20*time.Second, 10*time.Millisecond)
	assert.Equal(t, "event", got.Kind)
	assert.Equal(t, events.TypeRequested, got.Type)
	assert.Equal(t, "demo/web", got.Release)
	assert.NotZero(t, got.Sequence)

	// A dead letter too, with its service and reason.
	subj, err := events.Names{}.Subject(web, events.TypeRequested)
	require.NoError(t, err)
	msg := nats.NewMsg(events.Names{}.DeadLetterSubject("renderer", subj))
	msg.Data = []byte("not a cloudevent {")
	msg.Header.Set(events.HeaderDLQService, "renderer")
	msg.Header.Set(events.HeaderDLQReason, "malformed event")
	msg.Header.Set(events.HeaderDLQSubject, subj)
	_, err = e.js.PublishMsg(t.Context(), msg)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		select {
		case got = <-notices:
			return got.Kind == "deadletter"
		default:
			return false
		}
	}, 20*time.Second, 10*time.Millisecond)
	assert.Equal(t, "renderer", got.Service)
	assert.Equal(t, "malformed event", got.Reason)
	assert.Equal(t, "demo/web", got.Release)
}

// TestTraceNotOnTheStream: a revision the stream holds nothing of is a 404 saying so, not an
// empty trace.
func TestTraceNotOnTheStream(t *testing.T) {
	e := newEnv(t, false)
	var body map[string]any
	assert.Equal(t, http.StatusNotFound, e.get("releases/demo/web/trace", &body))
	assert.Contains(t, body["error"], "no release.requested")
	ev, err := events.NewEvent("troupe/cli", events.TypeRequested, web, events.Requested{
		Source: events.Source{Manifests: &events.ManifestsSource{Path: "deploy/"}}})
	require.NoError(t, err)
	_, err = events.NewPublisher(e.js, events.Names{}).Publish(t.Context(), ev)
	require.NoError(t, err)
	assert.Equal(t, http.StatusNotFound, e.get("releases/demo/web/trace?revision=-1", &body))
	assert.Equal(t, http.StatusNotFound, e.get("releases/demo/web/trace?revision=7", &body))
	assert.Contains(t, body["error"], "has no revision 7")
	var tr struct {
		Events []any `json:"events"`
	}
	assert.Equal(t, http.StatusOK, e.get("releases/demo/web/trace", &tr))
	assert.Len(t, tr.Events, 1)
}

// TestFeedOnlyWhileWatched: the live feed reads the stream only while a page is open: no
// consumer of the UI's before the first page, one while it is open, none soon after it closed.
func TestFeedOnlyWhileWatched(t *testing.T) {
	e := newEnv(t, false)
	consumers := func() int {
		stream, err := e.js.Stream(t.Context(), events.StreamName)
		require.NoError(t, err)
		info, err := stream.Info(t.Context())
		require.NoError(t, err)
		return info.State.Consumers
	}
	before := consumers() // history's own
	ctx, closePage := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+ui.Prefix+"api/live", nil)
	require.NoError(t, err)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	require.Eventually(t, func() bool { return consumers() == before+1 }, 10*time.Second, 20*time.Millisecond, "one consumer while a page is open")
	closePage()
	require.Eventually(t, func() bool { return consumers() == before }, 30*time.Second, 100*time.Millisecond, "none once it closed")
}
