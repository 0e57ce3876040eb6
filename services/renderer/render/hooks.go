package render

import (
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode"

	rel "helm.sh/helm/v4/pkg/release/v1"

	"github.com/troupe-dev/troupe/events"
)

// splitChartOutput does what Helm's releaseutil.SortManifests does with the engine's output —
// files in name order, partials and blank files skipped, documents split as Helm splits them,
// objects with a helm.sh/hook annotation set apart as hooks, unknown hook types skipped — but
// parses each document once, into the object the bundle keeps (SortManifests parses each document
// for its head, and the bundle needs the whole object: a second parse, most of the time a render
// spent outside the template engine). Test hooks are dropped. Regular objects are ordered later
// with the rest of the bundle; hooks in the order Helm runs them. A test holds the result to
// Helm's own install action.
func splitChartOutput(files map[string]string, res *chartResult) error {
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		content := files[name]
		if strings.HasPrefix(path.Base(name), "_") || strings.TrimSpace(content) == "" {
			continue
		}
		for i, doc := range splitManifests(content) {
			o, ok, err := parseDoc(name, i+1, []byte(doc))
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			evs, isHook := hookEvents(o.obj)
			switch {
			case !isHook:
				res.objects = append(res.objects, o)
			case evs == nil, slices.Contains(evs, string(rel.HookTest)):
				// unknown hook types (Helm skips these too) and test hooks
			default:
				annotations := annotationsOf(o.obj)
				weight, err := strconv.Atoi(annotations[rel.HookWeightAnnotation])
				if err != nil {
					weight = 0
				}
				res.hooks = append(res.hooks, hook{ref: o.ref, BundleHook: events.BundleHook{Events: evs, Weight: weight,
					Object: o.obj, DeletePolicies: splitList(annotations[rel.HookDeleteAnnotation])}})
			}
		}
	}
	sortHooks(res.hooks)
	return nil
}

// hookTypes are the hook types Helm knows, by the name in the annotation.
var hookTypes = map[string]rel.HookEvent{
	"pre-install": rel.HookPreInstall, "post-install": rel.HookPostInstall,
	"pre-delete": rel.HookPreDelete, "post-delete": rel.HookPostDelete,
	"pre-upgrade": rel.HookPreUpgrade, "post-upgrade": rel.HookPostUpgrade,
	"pre-rollback": rel.HookPreRollback, "post-rollback": rel.HookPostRollback,
	"test": rel.HookTest, "test-success": rel.HookTest, // Helm 2's name, still accepted by Helm
}

// hookEvents reads obj's helm.sh/hook annotation: isHook when it has one, events nil when it names
// a type Helm does not know.
func hookEvents(obj map[string]any) (events []string, isHook bool) {
	value, ok := annotationsOf(obj)[rel.HookAnnotation]
	if !ok {
		return nil, false
	}
	for t := range strings.SplitSeq(value, ",") {
		e, known := hookTypes[strings.ToLower(strings.TrimSpace(t))]
		if !known {
			return nil, true
		}
		events = append(events, string(e))
	}
	return events, true
}

// annotationsOf returns obj's annotations; parseDoc has checked they are strings.
func annotationsOf(obj map[string]any) map[string]string {
	meta, _ := obj["metadata"].(map[string]any)
	raw, _ := meta["annotations"].(map[string]any)
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		out[k], _ = v.(string)
	}
	return out
}

func splitList(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.ToLower(strings.TrimSpace(p)); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// sortHooks orders hooks as Helm runs them: by weight, then name, then Helm's install order of
// kinds.
func sortHooks(hooks []hook) {
	sort.SliceStable(hooks, func(i, j int) bool {
		a, b := hooks[i], hooks[j]
		if a.Weight != b.Weight {
			return a.Weight < b.Weight
		}
		if a.ref.Name != b.ref.Name {
			return a.ref.Name < b.ref.Name
		}
		return kindRank(a.ref.Kind) < kindRank(b.ref.Kind)
	})
}

// splitManifests is Helm's releaseutil.SplitManifests — documents split where a line starts with
// "---" (and the spaces or tabs after it), blank documents dropped, leading white space trimmed —
// as a slice in order, without its regular expression and its map of "manifest-N" keys, which
// together cost as much as a tenth of a render. A fuzz test holds it equal to Helm's.
func splitManifests(content string) []string {
	content = strings.TrimLeftFunc(content, unicode.IsSpace)
	var docs []string
	add := func(d string) {
		if strings.TrimSpace(d) != "" {
			docs = append(docs, strings.TrimLeftFunc(d, unicode.IsSpace))
		}
	}
	start := 0
	for line := 0; line < len(content); {
		if strings.HasPrefix(content[line:], "---") {
			add(content[start:line])
			start = line + 3
			for start < len(content) && (content[start] == ' ' || content[start] == '\t') {
				start++
			}
		}
		next := strings.IndexByte(content[line:], '\n')
		if next < 0 {
			break
		}
		line += next + 1
	}
	add(content[start:])
	return docs
}
