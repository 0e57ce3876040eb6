package apply

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"

	"github.com/troupe-dev/troupe/events"
)

var secretsGVR = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}

// AdoptedOf is what of objs was taken over from Helm and not applied by troupe since
// (Object.HandOver): they carry no troupe label, and Delete deletes them all the same unless
// another release's label is on them.
func AdoptedOf(objs []Object) map[events.ObjectRef]bool {
	out := map[events.ObjectRef]bool{}
	for _, o := range objs {
		if len(o.HandOver) > 0 {
			out[o.ObjectRef] = true
		}
	}
	return out
}

// AdoptRequest takes over the objects of a Helm release.
type AdoptRequest struct {
	Release  events.Release
	Revision int
	// Objects are Helm's manifest's, as the bundle holds them.
	Objects []map[string]any
	// HelmRelease is Helm's name of the release (for messages).
	HelmRelease string
	// FieldManagers are the managers whose fields the first apply after this takes over.
	FieldManagers []string
	// RemoveSecrets are Helm's release Secrets, in the release's namespace, to delete once
	// every object is found.
	RemoveSecrets []string
}

// Adopt takes over the objects of a Helm release without changing them: each must exist and
// belong to no other troupe release; none is written. The Result's Objects are the release's
// inventory from now on, each marked to have its FieldManagers' server-side apply fields handed
// to troupe's manager at the next apply (handOver), and with no manifest hash, so that apply
// counts it configured. Then Helm's release Secrets are deleted when asked. It needs the
// applier's AllowAdopt, as options.adopt does.
func (a *Applier) Adopt(ctx context.Context, req AdoptRequest) (*Result, error) {
	if !a.opts.AllowAdopt {
		return nil, &Error{Reason: ReasonAdoptNotAllowed, Err: fmt.Errorf("adopting Helm release %s: this applier does not take objects over (started without --allow-adopt)", req.HelmRelease)}
	}
	items, err := a.prepare(Request{Release: req.Release, Revision: req.Revision, Objects: req.Objects})
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	var errs []*Error
	a.each(ctx, items, func(ctx context.Context, it *item) {
		live, err := a.client(req.Release).Resource(it.gvr).Namespace(it.ref.Namespace).Get(ctx, it.ref.Name, metav1.GetOptions{})
		var e *Error
		switch {
		case apierrors.IsNotFound(err):
			e = &Error{Reason: ReasonOwnershipConflict, Objects: []ObjectError{{Ref: it.ref,
				Message: fmt.Sprintf("is in Helm release %s's manifest but not in the cluster: troupe takes over what is there and creates nothing while adopting (release the chart with troupe afterwards)", req.HelmRelease)}}}
		case err != nil:
			e = objectError(it.ref, err)
		default:
			annotations := live.GetAnnotations()
			helmName, helmNS := annotations["meta.helm.sh/release-name"], annotations["meta.helm.sh/release-namespace"]
			switch owner := ownerOf(live); {
			case owner.Name != "" && owner != req.Release:
				e = &Error{Reason: ReasonOwnershipConflict, Objects: []ObjectError{{Ref: it.ref,
					Message: fmt.Sprintf("belongs to troupe release %s", owner)}}}
			case owner.Name == "" && (helmName != req.HelmRelease || helmNS != req.Release.Namespace):
				// Helm (3.2 and later) marks every object of a release so: a manifest listing
				// objects Helm did not make for it takes nothing over.
				e = &Error{Reason: ReasonOwnershipConflict, Objects: []ObjectError{{Ref: it.ref,
					Message: fmt.Sprintf("is not Helm release %s/%s's: its meta.helm.sh/release-name and release-namespace annotations say %q and %q",
						req.Release.Namespace, req.HelmRelease, helmName, helmNS)}}}
			}
		}
		if e != nil {
			mu.Lock()
			errs = append(errs, e)
			mu.Unlock()
		}
	})
	if e := merge(errs); e != nil {
		return nil, e
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	res := &Result{}
	for _, it := range items {
		res.Objects = append(res.Objects, Object{ObjectRef: it.ref, Revision: req.Revision, HandOver: req.FieldManagers})
		res.Inventory = append(res.Inventory, events.AppliedObject{ObjectRef: it.ref, Action: events.ActionUnchanged})
	}
	secrets := a.client(req.Release).Resource(secretsGVR).Namespace(req.Release.Namespace)
	for _, name := range req.RemoveSecrets {
		if err := secrets.Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return nil, objectError(events.ObjectRef{APIVersion: "v1", Kind: "Secret", Namespace: req.Release.Namespace, Name: name}, err)
		}
	}
	return res, nil
}

// handOver gives troupe's field manager the fields it's managers own in the live object (the
// Helm CLI's, after an adoption), with one JSON patch of metadata.managedFields guarded by the
// object's resourceVersion, so that the apply that follows owns them: a field the new manifest
// no longer sets is then removed, as it would be had troupe applied it from the start. Entries
// of subresources (status) are left alone. Nothing to hand over, nothing is sent.
func (a *Applier) handOver(ctx context.Context, rel events.Release, it *item, managers []string) error {
	var err error
	for range 3 { // the object changed between the read and the patch: read it again
		var retry bool
		if retry, err = a.handOverOnce(ctx, rel, it, managers); !retry {
			return err
		}
	}
	return err
}

func (a *Applier) handOverOnce(ctx context.Context, rel events.Release, it *item, managers []string) (retry bool, err error) {
	res := a.client(rel).Resource(it.gvr).Namespace(it.ref.Namespace)
	live, err := res.Get(ctx, it.ref.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil // deleted since: the apply creates it, owned by troupe alone
	}
	if err != nil {
		return false, objectError(it.ref, err)
	}
	fields := live.GetManagedFields()
	var kept []metav1.ManagedFieldsEntry
	merged := &fieldpath.Set{}
	mine := -1
	handed := false
	for _, f := range fields {
		switch {
		case f.Subresource == "" && slices.Contains(managers, f.Manager) && f.FieldsV1 != nil:
			s := &fieldpath.Set{}
			if err := s.FromJSON(f.FieldsV1.GetRawReader()); err != nil {
				return false, objectError(it.ref, fmt.Errorf("managed fields of %s: %w", f.Manager, err))
			}
			merged = merged.Union(s)
			handed = true
		case f.Subresource == "" && f.Manager == a.opts.FieldManager && f.Operation == metav1.ManagedFieldsOperationApply:
			mine = len(kept)
			kept = append(kept, f)
		default:
			kept = append(kept, f)
		}
	}
	if !handed {
		return false, nil
	}
	if mine >= 0 && kept[mine].FieldsV1 != nil {
		s := &fieldpath.Set{}
		if err := s.FromJSON(kept[mine].FieldsV1.GetRawReader()); err != nil {
			return false, objectError(it.ref, err)
		}
		merged = merged.Union(s)
	}
	raw, err := merged.ToJSON()
	if err != nil {
		return false, objectError(it.ref, err)
	}
	now := metav1.Now()
	entry := metav1.ManagedFieldsEntry{Manager: a.opts.FieldManager, Operation: metav1.ManagedFieldsOperationApply,
		APIVersion: live.GetAPIVersion(), Time: &now, FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(string(raw))}
	if mine >= 0 {
		kept[mine] = entry
	} else {
		kept = append(kept, entry)
	}
	patch, err := json.Marshal([]map[string]any{
		{"op": "test", "path": "/metadata/resourceVersion", "value": live.GetResourceVersion()},
		{"op": "replace", "path": "/metadata/managedFields", "value": kept},
	})
	if err != nil {
		return false, objectError(it.ref, err)
	}
	if _, err := res.Patch(ctx, it.ref.Name, types.JSONPatchType, patch, metav1.PatchOptions{FieldManager: a.opts.FieldManager}); err != nil {
		e := objectError(it.ref, err)
		e.Objects[0].Message = "handing the fields of " + fmt.Sprint(managers) + " over to troupe: " + e.Objects[0].Message
		return apierrors.IsInvalid(err) || apierrors.IsConflict(err), e
	}
	return false, nil
}
