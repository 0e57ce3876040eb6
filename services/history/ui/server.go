package ui

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/flow"
	"github.com/troupe-dev/troupe/events/graph"
	"github.com/troupe-dev/troupe/events/historyapi"
)

//go:embed static
var static embed.FS

// Prefix is where the UI is served: its pages under it, its JSON and live feed under
// Prefix+"api/".
const Prefix = "/ui/"

// Source is the CloudEvents source of the requests the UI publishes.
const Source = events.SourcePrefix + "ui"

// Options configure a Server.
type Options struct {
	// Names is the system it shows: the live one (zero value) or a sandbox.
	Names events.Names
	// JS reads the events and the dead letters (every troupe identity may).
	JS jetstream.JetStream
	// NC asks the running services for their descriptions ($SRV.INFO), for the graph: an
	// identity with the Queries right (events/access).
	NC *nats.Conn
	// Query answers history's queries (history.Service.Answer), Secret values redacted. An
	// error with an HTTPStatus() int method answers with that status.
	Query func(ctx context.Context, endpoint string, q historyapi.Query) (any, error)
	// Requests publishes the requests of the rollback, uninstall and re-drive buttons: a
	// connection with the cli identity's rights, so NATS holds the UI to the CLI's rules. Nil:
	// the UI is read-only and says so.
	Requests jetstream.JetStream
	// ReadOnlyWhy says why Requests is nil, for the page (default: no identity for requests).
	ReadOnlyWhy string
	// Discover is how long the graph gathers the services' answers (default 500ms).
	Discover time.Duration
	Logger   *zerolog.Logger
}

// Server is the web UI: an http.Handler for Prefix, and the live feed it streams.
type Server struct {
	o    Options
	mux  *http.ServeMux
	log  zerolog.Logger
	feed *feed
	stop <-chan struct{} // closed when the server stops
}

// New returns the UI and starts its live feed, which stops with ctx.
func New(ctx context.Context, o Options) (*Server, error) {
	if o.JS == nil || o.NC == nil || o.Query == nil {
		return nil, errors.New("ui: JS, NC and Query are required")
	}
	if o.Discover <= 0 {
		o.Discover = 500 * time.Millisecond
	}
	if o.ReadOnlyWhy == "" {
		o.ReadOnlyWhy = "this server has no identity that may publish requests (the cli identity's rights)"
	}
	s := &Server{o: o, mux: http.NewServeMux(), log: zerolog.Nop(), stop: ctx.Done()}
	if o.Logger != nil {
		s.log = o.Logger.With().Str("component", "ui").Logger()
	}
	s.feed = newFeed(ctx, o.JS, o.Names, s.log)
	s.routes()
	return s, nil
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The pages load nothing from anywhere else, and no other site may frame them.
	w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "no-referrer")
	s.mux.ServeHTTP(w, r)
}

func (s *Server) routes() {
	sub, _ := fs.Sub(static, "static")
	files := http.StripPrefix(Prefix+"static/", http.FileServerFS(sub))
	s.mux.Handle("GET "+Prefix+"static/", files)
	s.mux.HandleFunc("GET "+Prefix+"{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, sub, "index.html")
	})
	api := Prefix + "api/"
	s.mux.HandleFunc("GET "+api+"info", func(w http.ResponseWriter, r *http.Request) {
		info := map[string]any{"actions": s.o.Requests != nil, "version": events.Version()}
		if s.o.Requests == nil {
			info["readOnly"] = s.o.ReadOnlyWhy
		}
		reply(w, info, nil)
	})
	s.mux.HandleFunc("GET "+api+"releases", func(w http.ResponseWriter, r *http.Request) {
		// Every release (or ?namespace='s), page after page as history answers them.
		all := []historyapi.Summary{}
		for after := ""; ; {
			res, err := s.o.Query(r.Context(), historyapi.EndpointList, historyapi.Query{Namespace: r.URL.Query().Get("namespace"), After: after})
			if err != nil {
				reply(w, nil, err)
				return
			}
			page, _ := res.([]historyapi.Summary)
			all = append(all, page...)
			if len(page) < historyapi.ListLimit {
				break
			}
			after = page[len(page)-1].Release
		}
		reply(w, all, nil)
	})
	s.mux.HandleFunc("GET "+api+"releases/{ns}/{name}", func(w http.ResponseWriter, r *http.Request) {
		rel := release(r)
		s.waitFolded(r, rel)
		res, err := s.o.Query(r.Context(), historyapi.EndpointGet, historyapi.Query{Release: rel})
		reply(w, res, err)
	})
	s.mux.HandleFunc("GET "+api+"releases/{ns}/{name}/diff", func(w http.ResponseWriter, r *http.Request) {
		res, err := s.o.Query(r.Context(), historyapi.EndpointDiff, historyapi.Query{Release: release(r),
			From: num(r.URL.Query().Get("from")), To: num(r.URL.Query().Get("to"))})
		reply(w, res, err)
	})
	s.mux.HandleFunc("GET "+api+"releases/{ns}/{name}/values", func(w http.ResponseWriter, r *http.Request) {
		all, _ := strconv.ParseBool(r.URL.Query().Get("all"))
		res, err := s.o.Query(r.Context(), historyapi.EndpointValues, historyapi.Query{Release: release(r),
			Revision: num(r.URL.Query().Get("revision")), All: all})
		reply(w, res, err)
	})
	s.mux.HandleFunc("GET "+api+"releases/{ns}/{name}/trace", s.trace)
	s.mux.HandleFunc("POST "+api+"releases/{ns}/{name}/rollback", s.action(s.rollback))
	s.mux.HandleFunc("POST "+api+"releases/{ns}/{name}/uninstall", s.action(s.uninstall))
	s.mux.HandleFunc("GET "+api+"graph", func(w http.ResponseWriter, r *http.Request) {
		g, err := graph.Discover(r.Context(), s.o.NC, s.o.Names, s.o.Discover)
		if err != nil {
			reply(w, nil, &httpError{http.StatusServiceUnavailable, err.Error()})
			return
		}
		reply(w, map[string]any{"graph": g, "svg": string(g.SVG())}, nil)
	})
	s.mux.HandleFunc("GET "+api+"deadletters", s.deadLetters)
	s.mux.HandleFunc("POST "+api+"deadletters/{seq}/redrive", s.action(s.redrive))
	s.mux.HandleFunc("GET "+api+"live", s.live)
}

// httpError is an answer's error with its status.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string   { return e.msg }
func (e *httpError) HTTPStatus() int { return e.code }

func badRequest(format string, args ...any) error {
	return &httpError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

// reply answers with res as JSON, or err as {"error": …} with its status.
func reply(w http.ResponseWriter, res any, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if err != nil {
		code := http.StatusInternalServerError
		if c, ok := err.(interface{ HTTPStatus() int }); ok {
			code = c.HTTPStatus()
		}
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
		return
	}
	_ = json.NewEncoder(w).Encode(res)
}

func release(r *http.Request) string { return r.PathValue("ns") + "/" + r.PathValue("name") }

func num(s string) int { n, _ := strconv.Atoi(s); return n }

// waitFolded waits, for at most two seconds, until history's view of rel (namespace/name) holds
// the event at stream sequence ?atLeast=: the page asks again when the live feed says something
// happened, and would otherwise race history's fold of that very event.
func (s *Server) waitFolded(r *http.Request, rel string) {
	seq, _ := strconv.ParseUint(r.URL.Query().Get("atLeast"), 10, 64)
	if seq == 0 || rel == "" {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	for {
		v, err := s.o.Query(ctx, historyapi.EndpointGet, historyapi.Query{Release: rel})
		if view, ok := v.(*historyapi.View); err == nil && ok && view.Sequence >= seq {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// trace answers a revision's trace (?revision=, default the latest), rebuilt from the stream as
// `troupe trace` does.
func (s *Server) trace(w http.ResponseWriter, r *http.Request) {
	rel := events.Release{Namespace: r.PathValue("ns"), Name: r.PathValue("name")}
	if err := rel.Validate(); err != nil {
		reply(w, nil, badRequest("%v", err))
		return
	}
	tr, err := flow.ReadTrace(r.Context(), s.o.JS, s.o.Names, rel, num(r.URL.Query().Get("revision")))
	if errors.Is(err, flow.ErrNoTrace) {
		err = &httpError{http.StatusNotFound, err.Error()}
	}
	reply(w, tr, err)
}

// action guards a POST that publishes a request: only with an identity for requests, only from
// the UI's own pages (a JSON body with the X-Troupe-UI header: a form on another site cannot
// send either without the browser asking first, and nothing here answers that question).
func (s *Server) action(do func(r *http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Troupe-UI") != "1" || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
			reply(w, nil, &httpError{http.StatusForbidden, "a request from the UI's own pages is required (X-Troupe-UI header, JSON body)"})
			return
		}
		if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
			reply(w, nil, &httpError{http.StatusForbidden, "a request from another site is refused"})
			return
		}
		if o := r.Header.Get("Origin"); o != "" {
			if u, err := url.Parse(o); err != nil || u.Host != r.Host {
				reply(w, nil, &httpError{http.StatusForbidden, "a request from another origin is refused"})
				return
			}
		}
		if s.o.Requests == nil {
			reply(w, nil, &httpError{http.StatusForbidden, "read-only: " + s.o.ReadOnlyWhy})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		res, err := do(r)
		reply(w, res, err)
	}
}

// published is what an action answers: the request it published.
type published struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Release  string `json:"release"`
	Sequence uint64 `json:"sequence"`
	// Duplicate: the stream already held the request (a dead letter re-driven twice).
	Duplicate bool `json:"duplicate,omitempty"`
}

func (s *Server) publish(ctx context.Context, e event.Event) (any, error) {
	ack, err := events.NewPublisher(s.o.Requests, s.o.Names).Publish(ctx, e)
	if err != nil {
		s.log.Warn().Err(err).Str("type", e.Type()).Str("release", e.Subject()).Msg("request not published")
		return nil, &httpError{http.StatusBadGateway, "the request was not published: " + err.Error()}
	}
	s.log.Info().Str("type", e.Type()).Str("release", e.Subject()).Str("event_id", e.ID()).Msg("published from the UI")
	return published{ID: e.ID(), Type: e.Type(), Release: e.Subject(), Sequence: ack.Sequence, Duplicate: ack.Duplicate}, nil
}

func (s *Server) rollback(r *http.Request) (any, error) {
	var body struct {
		Revision int    `json:"revision"`
		Reason   string `json:"reason"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		return nil, badRequest("a JSON body {revision, reason}: %v", err)
	}
	rel := events.Release{Namespace: r.PathValue("ns"), Name: r.PathValue("name")}
	e, err := events.NewEvent(Source, events.TypeRollbackRequested, rel, events.RollbackRequested{TargetRevision: body.Revision, Reason: body.Reason})
	if err != nil {
		return nil, badRequest("%v", err)
	}
	return s.publish(r.Context(), e)
}

func (s *Server) uninstall(r *http.Request) (any, error) {
	var body struct {
		DeleteCRDs bool `json:"deleteCRDs"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		return nil, badRequest("a JSON body {deleteCRDs}: %v", err)
	}
	rel := events.Release{Namespace: r.PathValue("ns"), Name: r.PathValue("name")}
	e, err := events.NewEvent(Source, events.TypeUninstallRequested, rel, events.UninstallRequested{DeleteCRDs: body.DeleteCRDs})
	if err != nil {
		return nil, badRequest("%v", err)
	}
	return s.publish(r.Context(), e)
}

// deadLetter is one dead letter as the page shows it.
type deadLetter struct {
	Sequence   uint64          `json:"sequence"` // in the dead-letter stream
	Service    string          `json:"service"`
	Reason     string          `json:"reason"`
	Subject    string          `json:"subject"`
	Original   uint64          `json:"original"` // the original's sequence in the events stream
	Deliveries uint64          `json:"deliveries"`
	Time       time.Time       `json:"time"`
	Type       string          `json:"type,omitempty"`
	Release    string          `json:"release,omitempty"`
	Event      json.RawMessage `json:"event,omitempty"` // the original event, when it is JSON
	Raw        string          `json:"raw,omitempty"`   // the original bytes, when they are not
	Redrive    string          `json:"redrive,omitempty"`
	// NoRedrive says why it cannot be re-driven.
	NoRedrive string `json:"noRedrive,omitempty"`
}

// deadLetterLimit is the most dead letters the page lists: the newest.
const deadLetterLimit = 200

func (s *Server) deadLetters(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	stream, err := s.o.JS.Stream(ctx, s.o.Names.DeadLetterStream())
	if err != nil {
		reply(w, nil, err)
		return
	}
	info, err := stream.Info(ctx)
	if err != nil {
		reply(w, nil, err)
		return
	}
	// The newest first, read one by one (no consumer left behind), skipping deleted ones.
	out := []deadLetter{}
	for seq, tries := info.State.LastSeq, 0; seq >= info.State.FirstSeq && seq > 0 && len(out) < deadLetterLimit && tries < 4*deadLetterLimit; seq, tries = seq-1, tries+1 {
		raw, err := stream.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			reply(w, nil, err)
			return
		}
		out = append(out, s.describe(seq, events.ParseDeadLetter(raw.Header, raw.Data)))
	}
	reply(w, out, nil)
}

// shownEvent is the most of an original event a dead letter shows whole.
const shownEvent = 64 << 10

func (s *Server) describe(seq uint64, d events.DeadLetter) deadLetter {
	out := deadLetter{Sequence: seq, Service: d.Service, Reason: d.Reason, Subject: d.Subject, Original: d.Sequence,
		Deliveries: d.Deliveries, Time: d.Time}
	switch {
	case len(d.Data) <= shownEvent && json.Valid(d.Data):
		out.Event = d.Data
	case len(d.Data) > 4096:
		out.Raw = fmt.Sprintf("%s… (%d bytes; troupe tail --dead-letters -o json shows them all)", strings.ToValidUTF8(string(d.Data[:4096]), "?"), len(d.Data))
	default:
		out.Raw = strings.ToValidUTF8(string(d.Data), "?")
	}
	if e, err := s.o.Names.Decode(d.Subject, d.Header, d.Data); err == nil {
		out.Type, out.Release = e.Type(), e.Subject()
	} else if rel, typ, err := s.o.Names.ParseSubject(d.Subject); err == nil {
		out.Type, out.Release = typ, rel.String() // what its subject says, the body unreadable
	}
	if _, err := s.o.Names.Redrivable(d); err != nil {
		out.NoRedrive = err.Error()
	} else {
		out.Redrive = fmt.Sprintf("%sapi/deadletters/%d/redrive", Prefix, seq)
	}
	return out
}

func (s *Server) redrive(r *http.Request) (any, error) {
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil || seq == 0 {
		return nil, badRequest("a dead letter's sequence number, from 1")
	}
	d, err := s.o.Names.ReadDeadLetter(r.Context(), s.o.JS, seq)
	if errors.Is(err, events.ErrNotFound) {
		return nil, &httpError{http.StatusNotFound, err.Error()}
	}
	if err != nil {
		return nil, err
	}
	e, err := s.o.Names.Redrive(r.Context(), s.o.JS, d, Source)
	if err != nil {
		return nil, &httpError{http.StatusUnprocessableEntity, err.Error()}
	}
	return s.publish(r.Context(), e)
}
