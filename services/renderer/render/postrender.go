package render

import (
	"encoding/json"
	"fmt"
	"strings"

	"sigs.k8s.io/kustomize/api/krusty"
	kusttypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/kustomize/kyaml/resid"
	"sigs.k8s.io/yaml"

	"github.com/troupe-dev/troupe/events"
)

// postRender runs each post-renderer on objs in turn, as a Flux HelmRelease's kustomize
// post-renderer does: the objects are the only resource of an in-memory kustomization that holds
// the patches (strategic merge, or JSON 6902 with a target) and image overrides, inline — it
// can read no file and fetch nothing — built with kustomize's API.
func postRender(objs []object, renderers []events.PostRenderer) ([]object, error) {
	for i, pr := range renderers {
		k := pr.Kustomize
		if k == nil || (len(k.Patches) == 0 && len(k.Images) == 0) {
			continue
		}
		what := fmt.Sprintf("postRenderers[%d]", i)
		var docs strings.Builder
		for _, o := range objs {
			b, err := yaml.Marshal(o.obj)
			if err != nil {
				return nil, fail(ReasonInvalidOutput, err, "%s: encode %s", what, o.ref)
			}
			docs.WriteString("---\n")
			docs.Write(b)
		}
		kust := kusttypes.Kustomization{Resources: []string{"objects.yaml"}}
		kust.APIVersion, kust.Kind = kusttypes.KustomizationVersion, kusttypes.KustomizationKind
		for _, p := range k.Patches {
			patch := kusttypes.Patch{Patch: p.Patch}
			if t := p.Target; t != nil {
				patch.Target = &kusttypes.Selector{ResId: resID(t), LabelSelector: t.LabelSelector, AnnotationSelector: t.AnnotationSelector}
			}
			kust.Patches = append(kust.Patches, patch)
		}
		for _, img := range k.Images {
			kust.Images = append(kust.Images, kusttypes.Image{Name: img.Name, NewName: img.NewName, NewTag: img.NewTag, Digest: img.Digest})
		}
		kb, err := json.Marshal(kust)
		if err != nil {
			return nil, fail(ReasonInvalidValues, err, "%s", what)
		}
		fs := filesys.MakeFsInMemory()
		if err := fs.WriteFile("/pr/kustomization.yaml", kb); err != nil {
			return nil, fail(ReasonKustomizeError, err, "%s", what)
		}
		if err := fs.WriteFile("/pr/objects.yaml", []byte(docs.String())); err != nil {
			return nil, fail(ReasonKustomizeError, err, "%s", what)
		}
		resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fs, "/pr")
		if err != nil {
			return nil, fail(ReasonKustomizeError, err, "%s", what)
		}
		out, err := resMap.AsYaml()
		if err != nil {
			return nil, fail(ReasonKustomizeError, err, "%s", what)
		}
		crds := map[events.ObjectRef]bool{}
		for _, o := range objs {
			crds[o.ref] = o.crd
		}
		if objs, err = parseDocs(what, string(out)); err != nil {
			return nil, err
		}
		for j := range objs {
			objs[j].crd = objs[j].crd || crds[objs[j].ref]
		}
	}
	return objs, nil
}

func resID(t *events.PatchTarget) resid.ResId {
	return resid.NewResIdWithNamespace(resid.Gvk{Group: t.Group, Version: t.Version, Kind: t.Kind}, t.Name, t.Namespace)
}
