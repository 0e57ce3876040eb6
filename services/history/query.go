package history

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/troupe-dev/troupe/events"
)

// QuerySubject returns the prefix of the query endpoints of the system names: troupe.history.list,
// .get, .revision, .diff, .timeline. Requests and replies are JSON (Query; the replies' types
// below).
func QuerySubject(names events.Names) string { return names.Root() + ".history" }

// Query is a request to a query endpoint; which fields count depends on the endpoint.
type Query struct {
	Release  string `json:"release,omitempty"` // namespace/name
	Revision int    `json:"revision,omitempty"`
	From     int    `json:"from,omitempty"`
	To       int    `json:"to,omitempty"`
	// list: only this namespace's releases; those after this namespace/name (the last of the
	// previous page); at most Limit of them (default and most: ListLimit).
	Namespace string `json:"namespace,omitempty"`
	After     string `json:"after,omitempty"`
	Limit     int    `json:"limit,omitempty"`
}

// ListLimit is the most releases one list reply holds (~150 bytes each, well inside a NATS
// message): a client asks again with After for the next page, until a page is shorter.
const ListLimit = 1000

// Summary is one release in a list.
type Summary struct {
	Release     string    `json:"release"`
	Current     int       `json:"current"`
	Latest      int       `json:"latest"`
	State       string    `json:"state"` // the latest revision's
	Uninstalled bool      `json:"uninstalled,omitempty"`
	Updated     time.Time `json:"updated"`
	// Requested and Timeout are the latest revision's request time and timeout: whoever lists
	// can tell a revision in flight past its time.
	Requested time.Time       `json:"requested,omitzero"`
	Timeout   events.Duration `json:"timeout,omitempty"`
}

// RevisionDetail is one revision with its manifests.
type RevisionDetail struct {
	*Revision
	Current   bool             `json:"current"`
	Manifests []map[string]any `json:"manifests,omitempty"`
}

// Diff is what changed between two revisions' manifests.
type Diff struct {
	Release string         `json:"release"`
	From    int            `json:"from"`
	To      int            `json:"to"`
	Objects []ObjectChange `json:"objects"`
}

// ObjectChange is one object added, removed or changed between two revisions.
type ObjectChange struct {
	events.ObjectRef
	Change string        `json:"change"` // added, removed, changed
	Fields []FieldChange `json:"fields,omitempty"`
}

// FieldChange is one field that differs.
type FieldChange struct {
	Path string `json:"path"`
	From any    `json:"from,omitempty"`
	To   any    `json:"to,omitempty"`
}

// queryError is an answer's error, with an HTTP-like code.
type queryError struct {
	code int
	msg  string
}

func (e *queryError) Error() string { return e.msg }

func notFound(format string, args ...any) error {
	return &queryError{code: http.StatusNotFound, msg: fmt.Sprintf(format, args...)}
}

func badQuery(format string, args ...any) error {
	return &queryError{code: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// List lists releases in NS/NAME order: q.Namespace's only, unless empty; those after q.After;
// q.Limit at most (default and most ListLimit).
func (s *Service) List(ctx context.Context, q Query) ([]Summary, error) {
	if q.Limit <= 0 || q.Limit > ListLimit {
		q.Limit = ListLimit
	}
	rels, err := s.releases(ctx, q.Namespace)
	if err != nil {
		return nil, err
	}
	out := []Summary{}
	for _, rel := range rels {
		if len(out) == q.Limit {
			break
		}
		if rel.String() <= q.After {
			continue
		}
		v, err := s.View(ctx, rel)
		if err != nil {
			continue // deleted meanwhile
		}
		sm := Summary{Release: v.Release, Current: v.Current, Uninstalled: v.Uninstalled, Updated: v.Updated}
		if n := v.newest(); n != nil {
			sm.Latest, sm.State, sm.Requested = n.Revision, n.State, n.Times.Requested
			if n.Request != nil {
				sm.Timeout = n.Request.Options.Timeout
			}
		}
		out = append(out, sm)
	}
	return out, nil
}

func (s *Service) view(ctx context.Context, release string) (*View, error) {
	rel, err := events.ParseRelease(release)
	if err != nil {
		return nil, badQuery("release %q: %v (want namespace/name)", release, err)
	}
	v, err := s.View(ctx, rel)
	if errors.Is(err, ErrUnknownRelease) {
		return nil, notFound("unknown release %s", rel)
	}
	return v, err
}

// RevisionOf returns one revision of a release, with its manifests when the bundle is still
// in the object store.
func (s *Service) RevisionOf(ctx context.Context, release string, n int) (*RevisionDetail, error) {
	v, err := s.view(ctx, release)
	if err != nil {
		return nil, err
	}
	r := v.Get(n)
	if r == nil {
		return nil, notFound("%s has no revision %d (it has %s)", release, n, revisionList(v))
	}
	d := &RevisionDetail{Revision: r, Current: n == v.Current}
	if r.Bundle != "" {
		if b, err := s.Bundle(ctx, r.Bundle); err == nil {
			d.Manifests = b.Objects
		}
	}
	return d, nil
}

// DiffOf compares two revisions' manifests, object by object and field by field.
func (s *Service) DiffOf(ctx context.Context, release string, from, to int) (*Diff, error) {
	a, err := s.RevisionOf(ctx, release, from)
	if err != nil {
		return nil, err
	}
	b, err := s.RevisionOf(ctx, release, to)
	if err != nil {
		return nil, err
	}
	for _, r := range []*RevisionDetail{a, b} {
		if r.Manifests == nil {
			return nil, notFound("%s revision %d: no manifests (never rendered, or its bundle is no longer stored)", release, r.Revision.Revision)
		}
	}
	byRef := func(objs []map[string]any) map[events.ObjectRef]map[string]any {
		m := map[events.ObjectRef]map[string]any{}
		for _, o := range objs {
			u := unstructured.Unstructured{Object: o}
			m[events.ObjectRef{APIVersion: u.GetAPIVersion(), Kind: u.GetKind(), Namespace: u.GetNamespace(), Name: u.GetName()}] = o
		}
		return m
	}
	before, after := byRef(a.Manifests), byRef(b.Manifests)
	d := &Diff{Release: release, From: from, To: to, Objects: []ObjectChange{}}
	for ref, o := range after {
		old, ok := before[ref]
		switch {
		case !ok:
			d.Objects = append(d.Objects, ObjectChange{ObjectRef: ref, Change: "added"})
		case !reflect.DeepEqual(old, o):
			var fields []FieldChange
			diffFields("", old, o, &fields)
			d.Objects = append(d.Objects, ObjectChange{ObjectRef: ref, Change: "changed", Fields: fields})
		}
	}
	for ref := range before {
		if _, ok := after[ref]; !ok {
			d.Objects = append(d.Objects, ObjectChange{ObjectRef: ref, Change: "removed"})
		}
	}
	slices.SortFunc(d.Objects, func(x, y ObjectChange) int {
		return compareRefs(x.ObjectRef, y.ObjectRef)
	})
	return d, nil
}

func compareRefs(a, b events.ObjectRef) int {
	for _, p := range [][2]string{{a.Kind, b.Kind}, {a.Namespace, b.Namespace}, {a.Name, b.Name}, {a.APIVersion, b.APIVersion}} {
		if p[0] != p[1] {
			if p[0] < p[1] {
				return -1
			}
			return 1
		}
	}
	return 0
}

// diffFields lists the leaves that differ between a and b, with dotted paths (list items as
// [i]).
func diffFields(path string, a, b any, out *[]FieldChange) {
	am, aok := a.(map[string]any)
	bm, bok := b.(map[string]any)
	if aok && bok {
		keys := map[string]bool{}
		for k := range am {
			keys[k] = true
		}
		for k := range bm {
			keys[k] = true
		}
		sorted := make([]string, 0, len(keys))
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		for _, k := range sorted {
			p := k
			if path != "" {
				p = path + "." + k
			}
			diffFields(p, am[k], bm[k], out)
		}
		return
	}
	al, aok := a.([]any)
	bl, bok := b.([]any)
	if aok && bok && len(al) == len(bl) {
		for i := range al {
			diffFields(path+"["+strconv.Itoa(i)+"]", al[i], bl[i], out)
		}
		return
	}
	if !reflect.DeepEqual(a, b) {
		*out = append(*out, FieldChange{Path: path, From: a, To: b})
	}
}

func revisionList(v *View) string {
	if len(v.Revisions) == 0 {
		return "none"
	}
	return fmt.Sprintf("%d to %d", v.Revisions[0].Revision, v.newest().Revision)
}

// answer runs one query.
func (s *Service) answer(ctx context.Context, endpoint string, q Query) (any, error) {
	switch endpoint {
	case "list":
		if q.Namespace != "" {
			if err := events.ValidateName("namespace", q.Namespace); err != nil {
				return nil, badQuery("%v", err)
			}
		}
		return s.List(ctx, q)
	case "get":
		return s.view(ctx, q.Release)
	case "revision":
		if q.Revision < 1 {
			return nil, badQuery("revision: want a revision number from 1")
		}
		return s.RevisionOf(ctx, q.Release, q.Revision)
	case "diff":
		if q.From < 1 || q.To < 1 {
			return nil, badQuery("diff: want from and to, revision numbers from 1")
		}
		return s.DiffOf(ctx, q.Release, q.From, q.To)
	case "timeline":
		v, err := s.view(ctx, q.Release)
		if err != nil {
			return nil, err
		}
		return v.Timeline, nil
	}
	return nil, notFound("no query %q", endpoint)
}

// Serve registers the query endpoints as a NATS micro service (troupe.history.<endpoint>),
// answering until ctx ends.
func (s *Service) Serve(ctx context.Context, nc *nats.Conn) error {
	svc, err := micro.AddService(nc, micro.Config{Name: "troupe-history-queries", Version: version(s.opts.Version),
		Description: "troupe history: releases, revisions, diffs, timelines"})
	if err != nil {
		return err
	}
	g := svc.AddGroup(QuerySubject(s.opts.Names))
	for _, ep := range []string{"list", "get", "revision", "diff", "timeline"} {
		err := g.AddEndpoint(ep, micro.HandlerFunc(func(req micro.Request) {
			var q Query
			if len(req.Data()) > 0 {
				if err := json.Unmarshal(req.Data(), &q); err != nil {
					_ = req.Error("400", "query: "+err.Error(), nil)
					return
				}
			}
			qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			res, err := s.answer(qctx, ep, q)
			if err != nil {
				code := 500
				var qe *queryError
				if errors.As(err, &qe) {
					code = qe.code
				}
				_ = req.Error(strconv.Itoa(code), err.Error(), nil)
				return
			}
			_ = req.RespondJSON(res)
		}))
		if err != nil {
			return err
		}
	}
	go func() { <-ctx.Done(); _ = svc.Stop() }()
	return nil
}

// HTTPHandler answers the same queries over HTTP: GET /releases, /releases/{ns}/{name},
// /releases/{ns}/{name}/revisions/{n}, /releases/{ns}/{name}/diff?from=&to=,
// /releases/{ns}/{name}/timeline.
func (s *Service) HTTPHandler() http.Handler {
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, res any, err error) {
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			code := http.StatusInternalServerError
			var qe *queryError
			if errors.As(err, &qe) {
				code = qe.code
			}
			w.WriteHeader(code)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
			return
		}
		_ = json.NewEncoder(w).Encode(res)
	}
	rel := func(r *http.Request) string { return r.PathValue("ns") + "/" + r.PathValue("name") }
	num := func(s string) int { n, _ := strconv.Atoi(s); return n }
	mux.HandleFunc("GET /releases", func(w http.ResponseWriter, r *http.Request) {
		res, err := s.answer(r.Context(), "list", Query{Namespace: r.URL.Query().Get("namespace"), After: r.URL.Query().Get("after"), Limit: num(r.URL.Query().Get("limit"))})
		reply(w, res, err)
	})
	mux.HandleFunc("GET /releases/{ns}/{name}", func(w http.ResponseWriter, r *http.Request) {
		res, err := s.answer(r.Context(), "get", Query{Release: rel(r)})
		reply(w, res, err)
	})
	mux.HandleFunc("GET /releases/{ns}/{name}/revisions/{n}", func(w http.ResponseWriter, r *http.Request) {
		res, err := s.answer(r.Context(), "revision", Query{Release: rel(r), Revision: num(r.PathValue("n"))})
		reply(w, res, err)
	})
	mux.HandleFunc("GET /releases/{ns}/{name}/diff", func(w http.ResponseWriter, r *http.Request) {
		res, err := s.answer(r.Context(), "diff", Query{Release: rel(r), From: num(r.URL.Query().Get("from")), To: num(r.URL.Query().Get("to"))})
		reply(w, res, err)
	})
	mux.HandleFunc("GET /releases/{ns}/{name}/timeline", func(w http.ResponseWriter, r *http.Request) {
		res, err := s.answer(r.Context(), "timeline", Query{Release: rel(r)})
		reply(w, res, err)
	})
	return mux
}

func version(v string) string {
	if v == "" {
		return events.Version()
	}
	return v
}
