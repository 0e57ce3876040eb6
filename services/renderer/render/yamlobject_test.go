package render

import (
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	releaseutil "helm.sh/helm/v4/pkg/release/v1/util"
	"sigs.k8s.io/yaml"

	"github.com/troupe-dev/troupe/services/renderer/internal/fixtures"
)

// FuzzYAMLObject holds yamlObject to sigs.k8s.io/yaml.Unmarshal: the same object, or an error
// when it errs. Seeded with the fixtures' YAML documents under 4 KiB (chart templates too: YAML
// reads template actions as text) and with YAML's corners.
func FuzzYAMLObject(f *testing.F) {
	for _, s := range []string{
		"", "null", "~", "{}", "[]", "a", "1", "- a\n- b\n",
		"a: 1\nb: 1.5\nc: -0\nd: 0x1F\ne: 0777\nf: 1e3\ng: .inf\nh: -.inf\ni: .nan\n",
		"big: 9223372036854775807\nbigger: 9223372036854775808\nhuge: 1e400\nneg: -9223372036854775808\n",
		"yes: no\non: off\ny: n\nTrue: FALSE\n",
		"1: a\n1.5: b\ntrue: c\n~: d\n",
		"1: a\n\"1\": b\n",
		"a: 1\na: 2\n",
		"[a]: b\n",
		"{a: b}: c\n",
		"t: 2001-12-14t21:59:43.10-05:00\nd: 2002-12-14\n",
		"bin: !!binary gIGC\nstr: !!str 123\nint: !!int \"12\"\nfloat: !!float 1\n",
		"base: &b {x: 1, y: [1, 2]}\nderived:\n  <<: *b\n  y: 3\n",
		"s: \"\\xff\\u00e9\\t\"\nq: 'it''s'\nblock: |\n  line\n  line2\nfolded: >\n  a\n  b\n",
		"a: b\n---\nc: d\n",
		"a: [1, 2\n",
		"\t- bad indent",
		"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  annotations:\n    n: 1\ndata:\n  k: v\n",
	} {
		f.Add([]byte(s))
	}
	fx := fixtures.Dir(f)
	_ = filepath.WalkDir(fx, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !(strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, doc := range releaseutil.SplitManifests(string(b)) {
			if len(doc) < 4<<10 { // large documents slow the fuzzer to a halt and add no new shapes
				f.Add([]byte(doc))
			}
		}
		return nil
	})
	f.Fuzz(func(t *testing.T, doc []byte) {
		var want map[string]any
		wantErr := yaml.Unmarshal(doc, &want)
		got, err := yamlObject(doc)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("yamlObject(%q): error %v, sigs.k8s.io/yaml: error %v", doc, err, wantErr)
		}
		// Two keys that become one string (1 and "1") make sigs.k8s.io/yaml keep either value, as
		// Go's map order falls: got must be one of its answers.
		for i := 0; err == nil && !reflect.DeepEqual(got, want) && i < 50; i++ {
			want = nil
			_ = yaml.Unmarshal(doc, &want)
		}
		if err == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("yamlObject(%q)\n got %#v\nwant %#v", doc, got, want)
		}
	})
}

// FuzzSplitManifests holds splitManifests to Helm's releaseutil.SplitManifests.
func FuzzSplitManifests(f *testing.F) {
	for _, s := range []string{"", "---", "a: 1", "a: 1\n---\nb: 2\n", "---\na\n---  \t b\n--- c\n", "\n\n  ---\n---\n\n",
		"a: |\n  ---\n---x: 1\n", "x: 1\r\n---\r\ny: 2\r\n", "-----\n----a\n- ---\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, content string) {
		m := releaseutil.SplitManifests(content)
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Sort(releaseutil.BySplitManifestsOrder(keys))
		var want []string
		for _, k := range keys {
			want = append(want, m[k])
		}
		if got := splitManifests(content); !reflect.DeepEqual(got, want) {
			t.Fatalf("splitManifests(%q)\n got %q\nwant %q", content, got, want)
		}
	})
}
