package apply

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"

	"github.com/troupe-dev/troupe/events"
)

// metadataOnly asks the API server to answer with the object's metadata alone (a
// PartialObjectMetadata): Apply needs no more than the resourceVersion, and encoding (and
// decoding) whole objects twice per object is a good part of what a server-side apply costs.
const metadataOnly = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"

// applyRaw server-side applies one item (or dry-runs it) and returns the resourceVersion the
// answer carries (after a dry run, the existing object's: "" when it does not exist) and whether
// the apply created the object (the server answers 201). The body is encoded once per item and
// sent as is; the answer is the object's metadata only.
func (a *Applier) applyRaw(ctx context.Context, rel events.Release, it *item, dryRun bool) (rv string, created bool, err error) {
	raw, code, err := a.send(ctx, rel, it, dryRun, metadataOnly)
	if err != nil {
		return "", false, err
	}
	var meta struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(raw, &meta); err != nil {
		return "", false, objectError(it.ref, fmt.Errorf("decode the API server's answer: %w", err))
	}
	return meta.Metadata.ResourceVersion, code == http.StatusCreated, nil
}

// apply server-side applies one item, or dry-runs it, and returns the whole object the server
// answers with.
func (a *Applier) apply(ctx context.Context, rel events.Release, it *item, dryRun bool) (*unstructured.Unstructured, error) {
	raw, _, err := a.send(ctx, rel, it, dryRun, runtime.ContentTypeJSON)
	if err != nil {
		return nil, err
	}
	out := &unstructured.Unstructured{}
	if err := out.UnmarshalJSON(raw); err != nil {
		return nil, objectError(it.ref, fmt.Errorf("decode the API server's answer: %w", err))
	}
	return out, nil
}

// send sends one item's server-side apply, or its dry run, and returns the answer's body and
// HTTP status.
//
// The dry run is where troupe validates, strictly as kubectl does (server-side apply already
// refuses fields the schema lacks; strict adds duplicate fields). The apply that follows sends
// the very same bytes, so the server is spared decoding them strictly a second time (without
// fieldValidation it would, to warn) — except the lead's (see markLead), which had no dry run:
// its apply validates as strictly.
func (a *Applier) send(ctx context.Context, rel events.Release, it *item, dryRun bool, accept string) ([]byte, int, error) {
	if err := it.encode(); err != nil {
		return nil, 0, err
	}
	c, err := a.conn(rel)
	if err != nil {
		return nil, 0, objectError(it.ref, err)
	}
	req := c.rest.Patch(types.ApplyPatchType).AbsPath(urlOf(it)...).
		Param("fieldManager", a.opts.FieldManager).Param("force", "true").
		SetHeader("Accept", accept).Body(it.body)
	switch {
	case dryRun:
		req = req.Param("dryRun", metav1.DryRunAll).Param("fieldValidation", metav1.FieldValidationStrict)
	case it.lead:
		req = req.Param("fieldValidation", metav1.FieldValidationStrict)
	default:
		req = req.Param("fieldValidation", metav1.FieldValidationIgnore)
	}
	res := req.Do(ctx)
	if err := res.Error(); err != nil { // Error, not Raw's error: it decodes the server's Status
		return nil, 0, objectError(it.ref, err)
	}
	raw, err := res.Raw()
	if err != nil {
		return nil, 0, objectError(it.ref, err)
	}
	var code int
	res.StatusCode(&code)
	return raw, code, nil
}

// encode sets it.body, once: it as JSON, what its dry run and its apply send.
func (it *item) encode() error {
	if it.body != nil {
		return nil
	}
	b, err := json.Marshal(it.obj.Object)
	if err != nil {
		return &Error{Reason: ReasonInvalidObject, Objects: []ObjectError{{Ref: it.ref, Message: err.Error()}}, Err: err}
	}
	it.body = b
	return nil
}

// urlOf is the path of it's object, as client-go's dynamic client builds it.
func urlOf(it *item) []string {
	url := []string{"api"}
	if it.gvr.Group != "" {
		url = []string{"apis", it.gvr.Group}
	}
	url = append(url, it.gvr.Version)
	if it.ref.Namespace != "" {
		url = append(url, "namespaces", it.ref.Namespace)
	}
	return append(url, it.gvr.Resource, it.ref.Name)
}

// conn is how the applier talks to the API server as one identity (its own, or a namespace's
// impersonated service account): a REST client for its applies and dry runs, sent as raw bytes
// (send), and client-go's metadata client for reading whose an object is (checkOwner).
type conn struct {
	rest rest.Interface
	meta metadata.Interface
}

// conn is the connection requests for rel go through (see client).
func (a *Applier) conn(rel events.Release) (*conn, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	key := ""
	if a.opts.ImpersonateServiceAccount != "" {
		key = rel.Namespace
	}
	if c, ok := a.conns[key]; ok {
		return c, nil
	}
	cfg := dynamic.ConfigFor(a.cfgFor(rel))
	cfg.GroupVersion = nil
	cfg.APIPath = "/"
	rc, err := rest.UnversionedRESTClientFor(cfg)
	if err != nil {
		return nil, err
	}
	meta, err := metadata.NewForConfig(a.cfgFor(rel))
	if err != nil {
		return nil, err
	}
	c := &conn{rest: rc, meta: meta}
	a.conns[key] = c
	return c, nil
}
