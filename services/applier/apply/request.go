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
// fieldValidation it would, to warn) — except the lead's (see leadOf), which had no dry run:
// its apply validates as strictly.
func (a *Applier) send(ctx context.Context, rel events.Release, it *item, dryRun bool, accept string) ([]byte, int, error) {
	if err := it.encode(); err != nil {
		return nil, 0, err
	}
	rc, err := a.rest(rel)
	if err != nil {
		return nil, 0, objectError(it.ref, err)
	}
	req := rc.Patch(types.ApplyPatchType).AbsPath(urlOf(it)...).
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

// metadata reads it's object, its metadata only (what whose it is needs: the API server need
// not encode the rest, managed fields and all).
func (a *Applier) metadata(ctx context.Context, rel events.Release, it *item) (*unstructured.Unstructured, error) {
	rc, err := a.rest(rel)
	if err != nil {
		return nil, err
	}
	res := rc.Get().AbsPath(urlOf(it)...).SetHeader("Accept", metadataOnly).Do(ctx)
	if err := res.Error(); err != nil { // NotFound among them, decoded from the server's Status
		return nil, err
	}
	raw, err := res.Raw()
	if err != nil {
		return nil, err
	}
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, fmt.Errorf("decode the API server's answer: %w", err)
	}
	return &unstructured.Unstructured{Object: obj}, nil
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

// rest is the REST client requests for rel go through (see client).
func (a *Applier) rest(rel events.Release) (rest.Interface, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	key := ""
	if a.opts.ImpersonateServiceAccount != "" {
		key = rel.Namespace
	}
	if c, ok := a.restClients[key]; ok {
		return c, nil
	}
	cfg := dynamic.ConfigFor(a.cfgFor(rel))
	cfg.GroupVersion = nil
	cfg.APIPath = "/"
	c, err := rest.UnversionedRESTClientFor(cfg)
	if err != nil {
		return nil, err
	}
	a.restClients[key] = c
	return c, nil
}
