package render

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"sigs.k8s.io/kustomize/api/konfig"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// noRemote refuses a kustomization that would fetch anything over the network: a remote
// resource, base or component (a git repository or an http(s) URL), or a generator's, patch's,
// replacement's or OpenAPI file from a URL. krusty has no option to turn remote loading off (it
// clones with git and downloads with a plain http.Client, no timeout), so the renderer reads
// every kustomization the build would — the root's and those of its local resources — before
// building, and names the first remote reference it finds.
func noRemote(fs filesys.FileSystem, dir string) error {
	seen := map[string]bool{}
	var visit func(dir string) error
	visit = func(dir string) error {
		if real, _, err := fs.CleanedAbs(dir); err == nil {
			dir = string(real) // as kustomize reads it: a linked base is where the link leads
		}
		if seen[dir] {
			return nil
		}
		seen[dir] = true
		k, file, err := readKustomization(fs, dir)
		if err != nil || k == nil {
			return err // none here: kustomize says so, or it is a plain file resource
		}
		refs := func(field string, list ...string) error {
			for _, ref := range list {
				if isRemote(ref) {
					return fmt.Errorf("%s: %s %q is remote: the renderer fetches no remote resources, bases or files unless its --kustomize-remote-hosts lists their host; put them in the overlay", file, field, redacted(ref))
				}
			}
			return nil
		}
		var generated []string
		for _, g := range k.ConfigMapGenerator {
			generated = append(generated, generatorFiles(g.GeneratorArgs)...)
		}
		for _, g := range k.SecretGenerator {
			generated = append(generated, generatorFiles(g.GeneratorArgs)...)
		}
		var patches []string
		//lint:ignore SA1019 kustomize still applies the deprecated patch fields, so they are read too
		for _, p := range append(k.Patches, k.PatchesJson6902...) {
			patches = append(patches, p.Path)
		}
		//lint:ignore SA1019 as above
		for _, p := range k.PatchesStrategicMerge {
			if !strings.Contains(string(p), "\n") { // else an inline patch
				patches = append(patches, string(p))
			}
		}
		var replacements []string
		for _, r := range k.Replacements {
			replacements = append(replacements, r.Path)
		}
		// Inline generator, transformer and validator configurations may name files too (a
		// patch's path, a generator's files): one that mentions a URL or git address is refused.
		for _, list := range [][]string{k.Generators, k.Transformers, k.Validators} {
			for _, inline := range list {
				if strings.Contains(inline, "\n") && mentionsRemote(inline) {
					return fmt.Errorf("%s: an inline configuration names a remote file: the renderer fetches no remote resources, bases or files; put them in the overlay", file)
				}
			}
		}
		// Configuration files named by generators, transformers and validators, the same.
		for _, list := range [][]string{files(k.Generators), files(k.Transformers), files(k.Validators)} {
			for _, f := range list {
				p := filepath.Join(dir, f)
				if fs.IsDir(p) || !fs.Exists(p) {
					continue
				}
				if data, err := fs.ReadFile(p); err == nil && mentionsRemote(string(data)) {
					return fmt.Errorf("%s: %s names a remote file: the renderer fetches no remote resources, bases or files; put them in the overlay", file, f)
				}
			}
		}
		for _, check := range []struct {
			field string
			list  []string
		}{
			{"resources", k.Resources}, {"components", k.Components}, {"crds", k.Crds},
			{"configurations", k.Configurations}, {"generators", files(k.Generators)}, {"transformers", files(k.Transformers)},
			{"validators", files(k.Validators)}, {"openapi", []string{k.OpenAPI["path"]}}, {"generator files", generated},
			{"patches", patches}, {"replacements", replacements},
		} {
			if err := refs(check.field, check.list...); err != nil {
				return err
			}
		}
		// Every local directory kustomize would build: resources, components, and the directories
		// generators, transformers and validators may name.
		for _, r := range slices.Concat(k.Resources, k.Components, files(k.Generators), files(k.Transformers), files(k.Validators)) {
			if sub := filepath.Join(dir, r); fs.IsDir(sub) {
				if err := visit(sub); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return visit(dir)
}

// readKustomization reads dir's kustomization file, nil when there is none.
func readKustomization(fs filesys.FileSystem, dir string) (*types.Kustomization, string, error) {
	for _, name := range konfig.RecognizedKustomizationFileNames() {
		file := filepath.Join(dir, name)
		if !fs.Exists(file) {
			continue
		}
		data, err := fs.ReadFile(file)
		if err != nil {
			return nil, "", err
		}
		var k types.Kustomization
		if err := yaml.Unmarshal(data, &k); err != nil {
			return nil, "", nil // kustomize reports it, better than this would
		}
		k.FixKustomization() // as kustomize reads it: bases among the resources, and so on
		return &k, file, nil
	}
	return nil, "", nil
}

// generatorFiles are the files a generator reads: files (KEY=path or path) and envs.
func generatorFiles(g types.GeneratorArgs) []string {
	var out []string
	for _, f := range g.FileSources {
		if key, path, ok := strings.Cut(f, "="); ok && !strings.Contains(key, "/") { // KEY=path; a URL's query is not a key
			f = path
		}
		out = append(out, f)
	}
	return append(out, g.EnvSources...) // env moved into envs by FixKustomization
}

// files keeps the entries of a generators/transformers/validators list that name files (the
// others are inline configurations).
func files(list []string) []string {
	var out []string
	for _, s := range list {
		if !strings.Contains(s, "\n") {
			out = append(out, s)
		}
	}
	return out
}

// scpUser is the user@ an scp-style git address (user@host:path) starts with; kustomize takes
// any reference starting with a user@ as a repository (wider here than kustomize's user names:
// a refusal too many is safer than a clone).
var scpUser = regexp.MustCompile(`^[^/@\s:]+@`)

// isRemote reports whether kustomize may fetch a reference over the network, as its loader and
// its repository parser read it: a URL (any scheme, in any case), a git:: address, a
// user@host:path address, or github.com/… and github.com:… (which kustomize clones before
// looking for a file of that name, and for components without looking at all). Other
// references without a scheme (gitlab.com/org/repo included) are local paths to kustomize.
func isRemote(ref string) bool {
	lower := strings.ToLower(ref)
	return strings.Contains(ref, "://") || scpUser.MatchString(ref) ||
		strings.HasPrefix(lower, "git::") || strings.HasPrefix(lower, "gh:") ||
		strings.HasPrefix(lower, "github.com/") || strings.HasPrefix(lower, "github.com:")
}

// mentionsRemote reports whether a configuration's text names a URL or a git address.
func mentionsRemote(text string) bool {
	if strings.Contains(text, "://") || strings.Contains(strings.ToLower(text), "git::") {
		return true
	}
	for _, word := range strings.Fields(text) {
		if word = strings.Trim(word, `"'`); scpUser.MatchString(word) && strings.Contains(word, ":") {
			return true
		}
	}
	return false
}
