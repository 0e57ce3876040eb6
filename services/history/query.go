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
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/historyapi"
)

// queryError is an answer's error, with an HTTP-like code.
type queryError struct {
	code int
	msg  string
}

func (e *queryError) Error() string { return e.msg }

// HTTPStatus is the HTTP status that answers with e.
func (e *queryError) HTTPStatus() int { return e.code }

// Answer answers a query of endpoint (historyapi.Endpoints) as the query subject does, Secret
// values redacted: the web UI's reads. An error for a bad query or what history does not have
// has an HTTPStatus method (400, 404).
func (s *Service) Answer(ctx context.Context, endpoint string, q historyapi.Query) (any, error) {
	return s.answer(ctx, endpoint, q, false)
}

func notFound(format string, args ...any) error {
	return &queryError{code: http.StatusNotFound, msg: fmt.Sprintf(format, args...)}
}

func badQuery(format string, args ...any) error {
	return &queryError{code: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// List lists releases in NS/NAME order: q.Namespace's only, unless empty; those after q.After;
// q.Limit at most (default and most historyapi.ListLimit).
func (s *Service) List(ctx context.Context, q historyapi.Query) ([]historyapi.Summary, error) {
	if q.Limit <= 0 || q.Limit > historyapi.ListLimit {
		q.Limit = historyapi.ListLimit
	}
	rels, err := s.releases(ctx, q.Namespace)
	if err != nil {
		return nil, err
	}
	out := []historyapi.Summary{}
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
		sm := historyapi.Summary{Release: v.Release, Current: v.Current, Uninstalled: v.Uninstalled, Updated: v.Updated}
		if n := v.Latest(); n != nil {
			sm.Latest, sm.State, sm.Requested = n.Revision, n.State, n.Times.Requested
			if n.Request != nil {
				sm.Timeout = n.Request.Options.Timeout
			}
		}
		out = append(out, sm)
	}
	return out, nil
}

func (s *Service) view(ctx context.Context, release string) (*historyapi.View, error) {
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
// A Secret's values are redacted (its keys stay): the history serves whoever may query it.
func (s *Service) RevisionOf(ctx context.Context, release string, n int) (*historyapi.RevisionDetail, error) {
	return s.revisionDetail(ctx, release, n, false)
}

// revisionDetail is RevisionOf, with Secret values when reveal (historyapi.SecretsSubject).
func (s *Service) revisionDetail(ctx context.Context, release string, n int, reveal bool) (*historyapi.RevisionDetail, error) {
	d, err := s.revisionOf(ctx, release, n)
	if err == nil && !reveal {
		for _, o := range d.Manifests {
			redactSecret(o)
		}
	}
	return d, err
}

// Redacted is what a Secret's value reads as in what the history serves.
const Redacted = "(redacted)"

// redactSecret replaces the values of obj's data and stringData with Redacted when obj is a
// Secret, and drops the kubectl annotation that copies it whole.
func redactSecret(obj map[string]any) {
	if obj["apiVersion"] != "v1" || obj["kind"] != "Secret" {
		return
	}
	for _, field := range []string{"data", "stringData"} {
		if m, ok := obj[field].(map[string]any); ok {
			for k := range m {
				m[k] = Redacted
			}
		}
	}
	unstructured.RemoveNestedField(obj, "metadata", "annotations", "kubectl.kubernetes.io/last-applied-configuration")
}

// isSecretValue says whether path, in a Secret's manifest, is a value to redact.
func isSecretValue(ref events.ObjectRef, path string) bool {
	if ref.APIVersion != "v1" || ref.Kind != "Secret" {
		return false
	}
	// A whole map too: one revision without data reports data itself as changed.
	for _, p := range []string{"data", "stringData", "metadata.annotations", "metadata"} {
		if path == p || (p != "metadata" && strings.HasPrefix(path, p+".")) {
			return true
		}
	}
	return strings.HasPrefix(path, "metadata.annotations.kubectl.kubernetes.io/last-applied-configuration")
}

func (s *Service) revisionOf(ctx context.Context, release string, n int) (*historyapi.RevisionDetail, error) {
	v, err := s.view(ctx, release)
	if err != nil {
		return nil, err
	}
	r := v.Get(n)
	if r == nil {
		return nil, notFound("%s has no revision %d (it has %s)", release, n, revisionList(v))
	}
	d := &historyapi.RevisionDetail{Revision: r, Current: n == v.Current}
	if r.Bundle != "" {
		if b, err := s.Bundle(ctx, r.Bundle); err == nil {
			d.Manifests = b.Objects
		}
	}
	return d, nil
}

// ValuesOf returns a revision's values (0: the latest revision that has them), as `helm get
// values` does: those the requests set, or with all the chart's computed ones.
func (s *Service) ValuesOf(ctx context.Context, release string, n int, all bool) (*historyapi.Values, error) {
	return s.values(ctx, release, n, all, false)
}

// values is ValuesOf; values that came from a Helm release's Secret (an adoption) are answered
// only when reveal (historyapi.SecretsSubject), as Helm's Secret showed them only to whoever
// may read Secrets.
func (s *Service) values(ctx context.Context, release string, n int, all, reveal bool) (*historyapi.Values, error) {
	v, err := s.view(ctx, release)
	if err != nil {
		return nil, err
	}
	var r *historyapi.Revision
	if n == 0 {
		for i := len(v.Revisions) - 1; i >= 0 && r == nil; i-- {
			if v.Revisions[i].Values != "" {
				r = v.Revisions[i]
			}
		}
		if r == nil {
			return nil, notFound("%s has no revision with chart values (charts have them; kustomize and manifests do not)", release)
		}
	} else if r = v.Get(n); r == nil {
		return nil, notFound("%s has no revision %d (it has %s)", release, n, revisionList(v))
	}
	if r.Values == "" {
		return nil, notFound("%s revision %d has no chart values (it was not rendered from a chart, or before troupe kept them)", release, r.Revision)
	}
	rc, err := s.bundles.Get(ctx, r.Values)
	if errors.Is(err, events.ErrNotFound) {
		return nil, notFound("%s revision %d: its values %s are no longer in the bundles object store", release, r.Revision, r.Values)
	}
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var rec events.ValuesRecord
	if err := json.NewDecoder(rc).Decode(&rec); err != nil {
		return nil, fmt.Errorf("%s revision %d: values %s: %w", release, r.Revision, r.Values, err)
	}
	if rec.FromHelm && !reveal {
		return nil, &queryError{code: http.StatusForbidden, msg: fmt.Sprintf(
			"%s revision %d: its values came from Helm's release Secret: only an identity that may read Secrets sees them (troupe get values --show-secrets)", release, r.Revision)}
	}
	out := &historyapi.Values{Release: release, Revision: r.Revision, Digest: r.Values, All: all, Values: rec.User}
	if all {
		out.Values = rec.Computed
	}
	if out.Values == nil {
		out.Values = events.Values{}
	}
	return out, nil
}

// DiffOf compares two revisions' manifests, object by object and field by field. A Secret's
// changed values read Redacted: which keys changed, not to what.
func (s *Service) DiffOf(ctx context.Context, release string, from, to int) (*historyapi.Diff, error) {
	return s.diff(ctx, release, from, to, false)
}

// diff is DiffOf, with Secret values when reveal (historyapi.SecretsSubject).
func (s *Service) diff(ctx context.Context, release string, from, to int, reveal bool) (*historyapi.Diff, error) {
	a, err := s.revisionOf(ctx, release, from)
	if err != nil {
		return nil, err
	}
	b, err := s.revisionOf(ctx, release, to)
	if err != nil {
		return nil, err
	}
	for _, r := range []*historyapi.RevisionDetail{a, b} {
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
	d := &historyapi.Diff{Release: release, From: from, To: to, Objects: []historyapi.ObjectChange{}}
	for ref, o := range after {
		old, ok := before[ref]
		switch {
		case !ok:
			d.Objects = append(d.Objects, historyapi.ObjectChange{ObjectRef: ref, Change: historyapi.ChangeAdded})
		case !reflect.DeepEqual(old, o):
			var fields []historyapi.FieldChange
			diffFields("", old, o, &fields)
			for i, f := range fields {
				if !reveal && isSecretValue(ref, f.Path) { // which key changed, not to what
					if f.From != nil {
						fields[i].From = Redacted
					}
					if f.To != nil {
						fields[i].To = Redacted
					}
				}
			}
			d.Objects = append(d.Objects, historyapi.ObjectChange{ObjectRef: ref, Change: historyapi.ChangeChanged, Fields: fields})
		}
	}
	for ref := range before {
		if _, ok := after[ref]; !ok {
			d.Objects = append(d.Objects, historyapi.ObjectChange{ObjectRef: ref, Change: historyapi.ChangeRemoved})
		}
	}
	slices.SortFunc(d.Objects, func(x, y historyapi.ObjectChange) int {
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
func diffFields(path string, a, b any, out *[]historyapi.FieldChange) {
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
		*out = append(*out, historyapi.FieldChange{Path: path, From: a, To: b})
	}
}

func revisionList(v *historyapi.View) string {
	if len(v.Revisions) == 0 {
		return "none"
	}
	return fmt.Sprintf("%d to %d", v.Revisions[0].Revision, v.Latest().Revision)
}

// answer runs one query.
// answer answers one query; reveal (asked on historyapi.SecretsSubject, which NATS lets only
// identities that may read Secrets publish to) leaves Secret values in manifests and diffs.
func (s *Service) answer(ctx context.Context, endpoint string, q historyapi.Query, reveal bool) (any, error) {
	switch endpoint {
	case historyapi.EndpointList:
		if q.Namespace != "" {
			if err := events.ValidateName("namespace", q.Namespace); err != nil {
				return nil, badQuery("%v", err)
			}
		}
		return s.List(ctx, q)
	case historyapi.EndpointGet:
		return s.view(ctx, q.Release)
	case historyapi.EndpointRevision:
		if q.Revision < 1 {
			return nil, badQuery("revision: want a revision number from 1")
		}
		return s.revisionDetail(ctx, q.Release, q.Revision, reveal)
	case historyapi.EndpointDiff:
		if q.From < 1 || q.To < 1 {
			return nil, badQuery("diff: want from and to, revision numbers from 1")
		}
		return s.diff(ctx, q.Release, q.From, q.To, reveal)
	case historyapi.EndpointTimeline:
		v, err := s.view(ctx, q.Release)
		if err != nil {
			return nil, err
		}
		return v.Timeline, nil
	case historyapi.EndpointValues:
		if q.Revision < 0 {
			return nil, badQuery("values: want a revision number from 1, or none for the latest")
		}
		return s.values(ctx, q.Release, q.Revision, q.All, reveal)
	}
	return nil, notFound("no query %q", endpoint)
}

// Serve registers the query endpoints as a NATS micro service (historyapi.QuerySubject:
// troupe.history.<endpoint>), answering until ctx ends.
func (s *Service) Serve(ctx context.Context, nc *nats.Conn) error {
	svc, err := micro.AddService(nc, micro.Config{Name: "troupe-history-queries", Version: version(s.opts.Version),
		Description: "troupe history: releases, revisions, diffs, timelines"})
	if err != nil {
		return err
	}
	if err := s.addEndpoints(ctx, nc, svc.AddGroup(historyapi.QuerySubject(s.opts.Names)), historyapi.Endpoints(), false); err != nil {
		return err
	}
	if err := s.addEndpoints(ctx, nc, svc.AddGroup(historyapi.SecretsSubject(s.opts.Names)), historyapi.SecretEndpoints(), true); err != nil {
		return err
	}
	go func() { <-ctx.Done(); _ = svc.Stop() }()
	return nil
}

// addEndpoints answers endpoints in group g; reveal: with Secret values.
func (s *Service) addEndpoints(ctx context.Context, nc *nats.Conn, g micro.Group, endpoints []string, reveal bool) error {
	for _, ep := range endpoints {
		err := g.AddEndpoint(ep, micro.HandlerFunc(func(req micro.Request) {
			var q historyapi.Query
			if len(req.Data()) > 0 {
				if err := json.Unmarshal(req.Data(), &q); err != nil {
					_ = req.Error("400", "query: "+err.Error(), nil)
					return
				}
			}
			qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			res, err := s.answer(qctx, ep, q, reveal)
			if err != nil {
				code := 500
				var qe *queryError
				if errors.As(err, &qe) {
					code = qe.code
				}
				_ = req.Error(strconv.Itoa(code), err.Error(), nil)
				return
			}
			data, err := json.Marshal(res)
			if err == nil {
				err = historyapi.Respond(req, data, nc.MaxPayload())
			}
			if err != nil { // said, never silence: the asker would wait to its timeout
				logger := zerolog.Nop()
				if s.opts.Logger != nil {
					logger = *s.opts.Logger
				}
				logger.Error().Err(err).Str("endpoint", ep).Str("release", q.Release).Int("bytes", len(data)).Msg("answer not sent")
				_ = req.Error("500", "history could not send its answer: "+err.Error(), nil)
			}
		}))
		if err != nil {
			return err
		}
	}
	return nil
}

// HTTPHandler answers the same queries over HTTP: GET /releases, /releases/{ns}/{name},
// /releases/{ns}/{name}/revisions/{n}, /releases/{ns}/{name}/diff?from=&to=,
// /releases/{ns}/{name}/values?revision=&all=, /releases/{ns}/{name}/timeline.
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
		res, err := s.answer(r.Context(), historyapi.EndpointList, historyapi.Query{Namespace: r.URL.Query().Get("namespace"), After: r.URL.Query().Get("after"), Limit: num(r.URL.Query().Get("limit"))}, false)
		reply(w, res, err)
	})
	mux.HandleFunc("GET /releases/{ns}/{name}", func(w http.ResponseWriter, r *http.Request) {
		res, err := s.answer(r.Context(), historyapi.EndpointGet, historyapi.Query{Release: rel(r)}, false)
		reply(w, res, err)
	})
	mux.HandleFunc("GET /releases/{ns}/{name}/revisions/{n}", func(w http.ResponseWriter, r *http.Request) {
		res, err := s.answer(r.Context(), historyapi.EndpointRevision, historyapi.Query{Release: rel(r), Revision: num(r.PathValue("n"))}, false)
		reply(w, res, err)
	})
	mux.HandleFunc("GET /releases/{ns}/{name}/diff", func(w http.ResponseWriter, r *http.Request) {
		res, err := s.answer(r.Context(), historyapi.EndpointDiff, historyapi.Query{Release: rel(r), From: num(r.URL.Query().Get("from")), To: num(r.URL.Query().Get("to"))}, false)
		reply(w, res, err)
	})
	mux.HandleFunc("GET /releases/{ns}/{name}/values", func(w http.ResponseWriter, r *http.Request) {
		all, _ := strconv.ParseBool(r.URL.Query().Get("all"))
		res, err := s.answer(r.Context(), historyapi.EndpointValues, historyapi.Query{Release: rel(r), Revision: num(r.URL.Query().Get("revision")), All: all}, false)
		reply(w, res, err)
	})
	mux.HandleFunc("GET /releases/{ns}/{name}/timeline", func(w http.ResponseWriter, r *http.Request) {
		res, err := s.answer(r.Context(), historyapi.EndpointTimeline, historyapi.Query{Release: rel(r)}, false)
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
