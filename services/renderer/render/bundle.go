package render

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/troupe-dev/troupe/events"
)

// hook is a chart hook and its object's reference, for ordering.
type hook struct {
	events.BundleHook
	ref events.ObjectRef
}

// object is one parsed document.
type object struct {
	obj map[string]any
	ref events.ObjectRef
	crd bool
}

// parseDocs parses multi-document YAML from source into objects, checking that each has an
// apiVersion, a kind and a name. Empty documents are skipped.
func parseDocs(source, data string) ([]object, error) {
	rd := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(data)))
	var out []object
	for i := 1; ; i++ {
		doc, err := rd.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fail(ReasonInvalidOutput, err, "%s: document %d is not valid YAML", source, i)
		}
		o, ok, err := parseDoc(source, i, doc)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, o)
		}
	}
}

// parseDoc parses document i of source into an object; ok is false for an empty document.
func parseDoc(source string, i int, doc []byte) (o object, ok bool, err error) {
	obj, err := yamlObject(doc)
	if err != nil {
		return object{}, false, fail(ReasonInvalidOutput, err, "%s: document %d is not valid YAML", source, i)
	}
	if len(obj) == 0 {
		return object{}, false, nil
	}
	if o, err = toObject(obj); err != nil {
		return object{}, false, fail(ReasonInvalidOutput, nil, "%s: document %d: %v", source, i, err)
	}
	return o, true, nil
}

func toObject(obj map[string]any) (object, error) {
	apiVersion, _ := obj["apiVersion"].(string)
	kind, _ := obj["kind"].(string)
	meta, _ := obj["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	ns, _ := meta["namespace"].(string)
	var missing []string
	if apiVersion == "" {
		missing = append(missing, "apiVersion")
	}
	if kind == "" {
		missing = append(missing, "kind")
	}
	if name == "" {
		missing = append(missing, "metadata.name")
	}
	if len(missing) > 0 {
		return object{}, fmt.Errorf("object %s has no %s", describe(kind, name), strings.Join(missing, ", "))
	}
	if annotations, ok := meta["annotations"]; ok && annotations != nil {
		m, ok := annotations.(map[string]any)
		if !ok {
			return object{}, fmt.Errorf("object %s: metadata.annotations must be a map of strings", describe(kind, name))
		}
		for k, v := range m {
			if _, ok := v.(string); !ok {
				return object{}, fmt.Errorf("object %s: annotation %s must be a string (quote it)", describe(kind, name), k)
			}
		}
	}
	return object{obj: obj, ref: events.ObjectRef{APIVersion: apiVersion, Kind: kind, Namespace: ns, Name: name},
		crd: kind == "CustomResourceDefinition"}, nil
}

func describe(kind, name string) string {
	switch {
	case kind != "" && name != "":
		return kind + "/" + name
	case kind != "":
		return "of kind " + kind
	case name != "":
		return "named " + name
	}
	return "(empty)"
}

// normalise gives namespaced objects the release's namespace when they have none and takes it
// from cluster-scoped ones, and refuses an object rendered twice.
func normalise(in *pass, objs []object) error {
	crdScopes := map[string]bool{} // group/kind → namespaced, from the bundle's own CRDs
	for _, o := range objs {
		if o.crd {
			group, kind, namespaced := crdScope(o.obj)
			crdScopes[group+"/"+kind] = namespaced
		}
	}
	seen := map[string]string{}
	for i := range objs {
		o := &objs[i]
		namespaced := isNamespaced(in.view, o.ref.APIVersion, o.ref.Kind, crdScopes)
		meta := o.obj["metadata"].(map[string]any)
		switch {
		case namespaced && o.ref.Namespace == "":
			meta["namespace"] = in.Release.Namespace
			o.ref.Namespace = in.Release.Namespace
		case !namespaced && o.ref.Namespace != "":
			delete(meta, "namespace")
			o.ref.Namespace = ""
		}
		key := o.ref.APIVersion + " " + o.ref.String()
		if _, dup := seen[key]; dup {
			return fail(ReasonInvalidOutput, nil, "%s is rendered twice", o.ref)
		}
		seen[key] = ""
	}
	return nil
}

// bundle runs the request's post-renderers on objs, normalises them (namespaces), orders them
// and encodes the bundle.
func (r *Renderer) bundle(in *pass, objs []object, hooks []hook, out Output) (*Output, error) {
	release := in.Release
	if len(in.Request.PostRenderers) > 0 {
		// On the objects as rendered (most with no namespace), as Flux runs them on Helm's
		// output: a patch naming no namespace matches.
		var err error
		if objs, err = postRender(objs, in.Request.PostRenderers); err != nil {
			return nil, err
		}
	}
	if err := normalise(in, objs); err != nil {
		return nil, err
	}
	sortObjects(objs)
	b := events.Bundle{APIVersion: events.BundleAPIVersion, Kind: events.BundleKind, Release: release.String(), Notes: out.Notes,
		Objects: make([]map[string]any, 0, len(objs))}
	for _, h := range hooks {
		b.Hooks = append(b.Hooks, h.BundleHook)
	}
	for _, o := range objs {
		b.Objects = append(b.Objects, o.obj)
		out.Objects = append(out.Objects, o.ref)
		if o.crd {
			b.CRDs++
		}
	}
	data, err := json.Marshal(b) // map keys sorted: canonical
	if err != nil {
		return nil, fail(ReasonInvalidOutput, err, "encode bundle")
	}
	if len(data) > r.opts.MaxBundleSize {
		return nil, fail(ReasonBundleTooLarge, nil, "the rendered bundle is %d bytes, more than the %d allowed", len(data), r.opts.MaxBundleSize)
	}
	out.Bundle = data
	out.Hooks = len(hooks)
	return &out, nil
}

func crdScope(obj map[string]any) (group, kind string, namespaced bool) {
	spec, _ := obj["spec"].(map[string]any)
	group, _ = spec["group"].(string)
	names, _ := spec["names"].(map[string]any)
	kind, _ = names["kind"].(string)
	scope, _ := spec["scope"].(string)
	return group, kind, scope != "Cluster"
}

// isNamespaced says whether kind is namespaced: the bundle's CRDs, then the built-in table, then
// the cluster's discovery; unknown kinds are taken as namespaced.
func isNamespaced(view *clusterView, apiVersion, kind string, crdScopes map[string]bool) bool {
	group, _, _ := strings.Cut(apiVersion, "/")
	if !strings.Contains(apiVersion, "/") {
		group = ""
	}
	if ns, ok := crdScopes[group+"/"+kind]; ok {
		return ns
	}
	if clusterScoped[group+"/"+kind] {
		return false
	}
	if k, known := view.kind(apiVersion, kind); known {
		return k.namespaced
	}
	return true
}

// clusterScoped are the cluster-scoped kinds of Kubernetes itself, by group/kind.
var clusterScoped = map[string]bool{
	"/Namespace": true, "/Node": true, "/PersistentVolume": true, "/ComponentStatus": true,
	"rbac.authorization.k8s.io/ClusterRole": true, "rbac.authorization.k8s.io/ClusterRoleBinding": true,
	"apiextensions.k8s.io/CustomResourceDefinition": true, "apiregistration.k8s.io/APIService": true,
	"admissionregistration.k8s.io/MutatingWebhookConfiguration":     true,
	"admissionregistration.k8s.io/ValidatingWebhookConfiguration":   true,
	"admissionregistration.k8s.io/ValidatingAdmissionPolicy":        true,
	"admissionregistration.k8s.io/ValidatingAdmissionPolicyBinding": true,
	"admissionregistration.k8s.io/MutatingAdmissionPolicy":          true,
	"admissionregistration.k8s.io/MutatingAdmissionPolicyBinding":   true,
	"storage.k8s.io/StorageClass":                                   true, "storage.k8s.io/CSIDriver": true, "storage.k8s.io/CSINode": true,
	"storage.k8s.io/VolumeAttachment": true, "storage.k8s.io/VolumeAttributesClass": true,
	"scheduling.k8s.io/PriorityClass": true, "networking.k8s.io/IngressClass": true,
	"networking.k8s.io/IPAddress": true, "networking.k8s.io/ServiceCIDR": true,
	"node.k8s.io/RuntimeClass": true, "certificates.k8s.io/CertificateSigningRequest": true,
	"certificates.k8s.io/ClusterTrustBundle":                  true,
	"flowcontrol.apiserver.k8s.io/FlowSchema":                 true,
	"flowcontrol.apiserver.k8s.io/PriorityLevelConfiguration": true,
	"resource.k8s.io/DeviceClass":                             true,
}
