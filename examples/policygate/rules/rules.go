package rules

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/troupe-dev/troupe/events"
)

// The rules' ids: a finding's Rule.
const (
	RuleImageDigest    = "image-digest"
	RuleResourceLimits = "resource-limits"
	RuleNoLoadBalancer = "no-loadbalancer"
)

// Rules are every rule's id, in the order Check applies them to an object.
var Rules = []string{RuleImageDigest, RuleResourceLimits, RuleNoLoadBalancer}

// AllNamespaces, in Config.ForbidLoadBalancerIn, forbids LoadBalancer Services everywhere.
const AllNamespaces = "*"

// Config tunes the rules.
type Config struct {
	// RequireDigest makes image-digest require every image to be pinned by a sha256 digest.
	// Without it, only an image tagged latest (or not tagged, which means latest) breaks it.
	RequireDigest bool
	// ForbidLoadBalancerIn are the namespaces where a Service may not be of type LoadBalancer;
	// AllNamespaces ("*") is every namespace. Empty: no-loadbalancer finds nothing.
	ForbidLoadBalancerIn []string
}

// forbidsLoadBalancer reports whether namespace forbids Services of type LoadBalancer.
func (c Config) forbidsLoadBalancer(namespace string) bool {
	return slices.Contains(c.ForbidLoadBalancerIn, AllNamespaces) || slices.Contains(c.ForbidLoadBalancerIn, namespace)
}

// Check returns what in b breaks the rules, for release rel under cfg: its objects', then its
// hooks', in the bundle's order; within an object, container by container (init containers,
// containers, ephemeral containers), each container's image-digest before its
// resource-limits. nil when nothing does.
func Check(b *events.Bundle, rel events.Release, cfg Config) []events.Finding {
	var out []events.Finding
	for _, obj := range b.Objects {
		out = append(out, checkObject(object{obj, rel.Namespace, false}, cfg)...)
	}
	for _, h := range b.Hooks {
		out = append(out, checkObject(object{h.Object, rel.Namespace, true}, cfg)...)
	}
	return out
}

// object is one Kubernetes object of a bundle.
type object struct {
	m map[string]any
	// namespace is the release's: the object's when its metadata names none.
	namespace string
	hook      bool
}

// ref names o; every object a rule finds something in is namespaced (workloads, Services).
func (o object) ref() *events.ObjectRef {
	ns := cmp.Or(str(o.m, "metadata", "namespace"), o.namespace)
	return &events.ObjectRef{APIVersion: str(o.m, "apiVersion"), Kind: o.kind(), Namespace: ns, Name: str(o.m, "metadata", "name")}
}

func (o object) kind() string { return str(o.m, "kind") }

// group is the API group of the object's apiVersion: "" for the core group (v1).
func (o object) group() string {
	g, _, ok := strings.Cut(str(o.m, "apiVersion"), "/")
	if !ok {
		return ""
	}
	return g
}

// finding is a finding about o under rule; a hook's message says it is one.
func (o object) finding(rule, format string, args ...any) events.Finding {
	msg := fmt.Sprintf(format, args...)
	if o.hook {
		msg = "hook: " + msg
	}
	return events.Finding{Rule: rule, Object: o.ref(), Message: msg}
}

func checkObject(o object, cfg Config) []events.Finding {
	var out []events.Finding
	if spec, ok := podSpec(o); ok {
		podLimits := mapAt(spec, "resources", "limits")
		for _, c := range containers(spec) {
			if f, bad := checkImage(o, c, cfg); bad {
				out = append(out, f)
			}
			if f, bad := checkLimits(o, c, podLimits); bad {
				out = append(out, f)
			}
		}
	}
	if f, bad := checkService(o, cfg); bad {
		out = append(out, f)
	}
	return out
}

// podTemplatePaths says where the pod spec of each workload kind is, by API group and kind.
var podTemplatePaths = map[string][]string{
	"/Pod":                   {"spec"},
	"/ReplicationController": {"spec", "template", "spec"},
	"/PodTemplate":           {"template", "spec"},
	"apps/Deployment":        {"spec", "template", "spec"},
	"apps/StatefulSet":       {"spec", "template", "spec"},
	"apps/DaemonSet":         {"spec", "template", "spec"},
	"apps/ReplicaSet":        {"spec", "template", "spec"},
	"extensions/Deployment":  {"spec", "template", "spec"},
	"extensions/DaemonSet":   {"spec", "template", "spec"},
	"extensions/ReplicaSet":  {"spec", "template", "spec"},
	"batch/Job":              {"spec", "template", "spec"},
	"batch/CronJob":          {"spec", "jobTemplate", "spec", "template", "spec"},
}

// podSpec returns the pod spec o runs, if o is a Pod or a workload with a pod template. A kind
// of the same name in another API group (a custom resource's Deployment) is not one.
func podSpec(o object) (map[string]any, bool) {
	path := podTemplatePaths[o.group()+"/"+o.kind()]
	if path == nil {
		return nil, false
	}
	spec := mapAt(o.m, path...)
	return spec, spec != nil
}

// container is one container of a pod spec.
type container struct {
	m map[string]any
	// list is the pod spec's field it is in: containers, initContainers, ephemeralContainers.
	list string
}

func (c container) name() string { return str(c.m, "name") }

// describe names c for a person: `container "app"`, `init container "setup"`.
func (c container) describe() string {
	what := map[string]string{"initContainers": "init container", "ephemeralContainers": "ephemeral container"}[c.list]
	if what == "" {
		what = "container"
	}
	return fmt.Sprintf("%s %q", what, c.name())
}

// containers returns spec's containers in the order they start: init containers, containers,
// ephemeral containers.
func containers(spec map[string]any) []container {
	var out []container
	for _, list := range []string{"initContainers", "containers", "ephemeralContainers"} {
		items, _ := spec[list].([]any)
		for _, it := range items {
			if m, ok := it.(map[string]any); ok {
				out = append(out, container{m, list})
			}
		}
	}
	return out
}

var sha256Digest = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)

// image is a container image reference: [registry/]repository[:tag][@digest].
type image struct {
	name, tag, digest string
}

func parseImage(ref string) image {
	var im image
	if i := strings.LastIndex(ref, "@"); i >= 0 {
		ref, im.digest = ref[:i], ref[i+1:]
	}
	// A tag follows the last ':' after the last '/' (a ':' before it is a registry's port).
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		ref, im.tag = ref[:i], ref[i+1:]
	}
	im.name = ref
	return im
}

// latest reports whether the image runs whatever latest is now: tagged latest, or not tagged.
func (im image) latest() bool { return im.tag == "" || im.tag == "latest" }

// pinned reports whether the image is pinned by a sha256 digest.
func (im image) pinned() bool { return sha256Digest.MatchString(im.digest) }

func checkImage(o object, c container, cfg Config) (events.Finding, bool) {
	ref := str(c.m, "image")
	if ref == "" {
		return o.finding(RuleImageDigest, "%s has no image", c.describe()), true
	}
	im := parseImage(ref)
	switch {
	case im.digest != "" && !im.pinned():
		return o.finding(RuleImageDigest, "%s: image %q has digest %q, not a sha256 digest", c.describe(), ref, im.digest), true
	case im.pinned():
		return events.Finding{}, false
	case cfg.RequireDigest && im.latest():
		return o.finding(RuleImageDigest, "%s: image %q is not pinned by a digest (@sha256:…), and runs whatever latest is", c.describe(), ref), true
	case cfg.RequireDigest:
		return o.finding(RuleImageDigest, "%s: image %q is not pinned by a digest (@sha256:…)", c.describe(), ref), true
	case im.tag == "":
		return o.finding(RuleImageDigest, "%s: image %q has no tag, which means latest: tag it with a version or pin it by digest", c.describe(), ref), true
	case im.latest():
		return o.finding(RuleImageDigest, "%s: image %q uses the tag latest: tag it with a version or pin it by digest", c.describe(), ref), true
	}
	return events.Finding{}, false
}

// limitNames are the limits every container must have.
var limitNames = []string{"cpu", "memory"}

// missingLimits returns the limits of limitNames that neither the container's limits nor its
// pod's (pod-level resources bound every container of the pod) set.
func missingLimits(limits, podLimits map[string]any) []string {
	var missing []string
	for _, n := range limitNames {
		if !set(limits, n) && !set(podLimits, n) {
			missing = append(missing, "resources.limits."+n)
		}
	}
	return missing
}

// set reports whether limits sets the limit name (null or "" sets nothing).
func set(limits map[string]any, name string) bool {
	v, ok := limits[name]
	return ok && v != nil && v != ""
}

func checkLimits(o object, c container, podLimits map[string]any) (events.Finding, bool) {
	if c.list == "ephemeralContainers" {
		return events.Finding{}, false // Kubernetes allows them no resources
	}
	missing := missingLimits(mapAt(c.m, "resources", "limits"), podLimits)
	if len(missing) == 0 {
		return events.Finding{}, false
	}
	return o.finding(RuleResourceLimits, "%s has no %s", c.describe(), strings.Join(missing, " nor ")), true
}

func checkService(o object, cfg Config) (events.Finding, bool) {
	if o.group() != "" || o.kind() != "Service" || str(o.m, "spec", "type") != "LoadBalancer" {
		return events.Finding{}, false
	}
	ns := o.ref().Namespace
	if !cfg.forbidsLoadBalancer(ns) {
		return events.Finding{}, false
	}
	return o.finding(RuleNoLoadBalancer, "Service %q is of type LoadBalancer, which namespace %q forbids: expose it through an Ingress or a Gateway, or as a ClusterIP or NodePort Service", str(o.m, "metadata", "name"), ns), true
}

// mapAt returns the map at path in m, nil when there is none.
func mapAt(m map[string]any, path ...string) map[string]any {
	for _, k := range path {
		next, ok := m[k].(map[string]any)
		if !ok {
			return nil
		}
		m = next
	}
	return m
}

// str returns the string at path in m, "" when there is none.
func str(m map[string]any, path ...string) string {
	parent := mapAt(m, path[:len(path)-1]...)
	s, _ := parent[path[len(path)-1]].(string)
	return s
}
