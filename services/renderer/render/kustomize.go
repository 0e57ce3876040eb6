package render

import (
	"archive/tar"
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/troupe-dev/troupe/events"
)

// renderKustomize builds a kustomization with kustomize's own API (krusty), as `kustomize build`
// and `kubectl apply -k` do: from a directory, or from an uploaded .tar.gz unpacked in memory.
//
// A remote resource, base or file is fetched only from a host Options.KustomizeRemoteHosts lists
// (see fetchRemote), and then the render is not cached: it reports fetched.
func (r *Renderer) renderKustomize(ctx context.Context, k *events.KustomizeSource) (objs []object, fetched bool, err error) {
	fs := filesys.MakeFsOnDisk()
	dir := k.Path
	if k.Object != "" {
		data, err := r.fetchSource(ctx, k.Object)
		if err != nil {
			return nil, false, err
		}
		mem := filesys.MakeFsInMemory()
		if err := untarInto(mem, bytes.NewReader(data), archiveLimits{bytes: int64(r.opts.MaxSourceSize), entries: r.opts.MaxArchiveEntries}); err != nil {
			return nil, false, fail(ReasonBadArchive, err, "uploaded kustomization %s", k.Object)
		}
		fs, dir = mem, "/"+strings.TrimPrefix(path.Clean("/"+k.Dir), "/")
	} else {
		real, err := r.roots.confine("kustomize.path", dir)
		if err != nil {
			return nil, false, err
		}
		fs, dir = confinedFS{FileSystem: fs, roots: r.roots}, real
	}
	if len(r.remoteHosts) > 0 {
		if fs, fetched, err = r.fetchRemote(ctx, fs, dir); err != nil {
			reason := ReasonKustomizeError
			if fe := (*fetchError)(nil); errors.As(err, &fe) {
				reason = fe.reason
			}
			return nil, false, fail(reason, err, "kustomize build %s", cmp.Or(k.Path, "(uploaded)"))
		}
	}
	if err := noRemote(fs, dir); err != nil {
		return nil, false, fail(ReasonKustomizeError, err, "kustomize build %s", cmp.Or(k.Path, "(uploaded)"))
	}
	opts := krusty.MakeDefaultOptions()
	resMap, err := krusty.MakeKustomizer(opts).Run(fs, dir)
	if err != nil {
		return nil, false, fail(ReasonKustomizeError, err, "kustomize build %s", dir)
	}
	out, err := resMap.AsYaml()
	if err != nil {
		return nil, false, fail(ReasonKustomizeError, err, "kustomize build %s", dir)
	}
	objs, err = parseDocs("kustomize build "+dir, string(out))
	return objs, fetched, err
}

// renderManifests reads plain YAML: a directory's .yaml/.yml/.json files (sorted, recursive),
// a file, inline YAML, or an uploaded file.
func (r *Renderer) renderManifests(ctx context.Context, m *events.ManifestsSource) ([]object, error) {
	switch {
	case m.YAML != "":
		return parseDocs("inline manifests", m.YAML)
	case m.Object != "":
		data, err := r.fetchSource(ctx, m.Object)
		if err != nil {
			return nil, err
		}
		return parseDocs("uploaded manifests "+m.Object, string(data))
	}
	root, err := r.roots.confine("manifests.path", m.Path)
	if err != nil {
		return nil, err
	}
	info, err := os.Stat(root)
	if err != nil {
		return nil, fail(ReasonSourceNotFound, nil, "manifests %s: not found", m.Path)
	}
	if !info.IsDir() {
		if !manifestFile(root) {
			return nil, fail(ReasonUnsupported, nil, "manifests %s: not a .yaml, .yml or .json file", m.Path)
		}
		data, err := os.ReadFile(root)
		if err != nil {
			return nil, fail(ReasonSourceNotFound, err, "manifests %s", m.Path)
		}
		return parseDocs(m.Path, string(data))
	}
	var out []object
	err = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !manifestFile(p) {
			return err
		}
		if !r.roots.contains(p) { // a symlink out of the roots
			return fail(ReasonSourceNotAllowed, nil, "manifests %s: %s is a link out of the renderer's source roots", m.Path, p)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		docs, err := parseDocs(p, string(data))
		if err != nil {
			return err
		}
		out = append(out, docs...)
		return nil
	})
	var rerr *events.Error
	if errors.As(err, &rerr) {
		return nil, rerr
	}
	if err != nil {
		return nil, fail(ReasonSourceNotFound, err, "manifests %s", m.Path)
	}
	return out, nil
}

// manifestFile reports whether p names a manifests file: .yaml, .yml or .json.
func manifestFile(p string) bool {
	switch filepath.Ext(p) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

// archiveLimits bound what an archive may unpack to.
type archiveLimits struct {
	bytes   int64 // every file's size together
	entries int
	// skipLinks leaves links out rather than refusing the archive: a fetched repository's
	// links (to anywhere) are not followed, and one a kustomization names is simply not found.
	skipLinks bool
}

// untarInto unpacks a .tar.gz into fs as it reads it: regular files and directories only (a
// link is refused: it could point anywhere), no entry leaving the archive's root, and within
// limits — a file that would pass them is an error, never truncated.
func untarInto(fs filesys.FileSystem, r io.Reader, limits archiveLimits) error {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("not a .tar.gz: %w", err)
	}
	return untar(fs, "/", tar.NewReader(gz), newBudget(limits))
}

// budget is what is left of archiveLimits as archives are unpacked.
type budget struct {
	archiveLimits
	bytes   int64
	entries int
}

func newBudget(l archiveLimits) *budget {
	return &budget{archiveLimits: l, bytes: l.bytes, entries: l.entries}
}

// untar unpacks tr under dest in fs, as untarInto says, taking what it unpacks off left.
func untar(fs filesys.FileSystem, dest string, tr *tar.Reader, left *budget) error {
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("not a .tar.gz: %w", err)
		}
		if left.entries--; left.entries < 0 {
			return fmt.Errorf("more than %d entries", left.archiveLimits.entries)
		}
		// Names count too: 10000 entries of long names, or of deep directories, are no small archive.
		if left.bytes -= int64(len(h.Name)); left.bytes < 0 {
			return fmt.Errorf("entry %q: more than %d bytes unpacked", truncate(h.Name, 64), left.archiveLimits.bytes)
		}
		if slices.Contains(strings.Split(filepath.ToSlash(h.Name), "/"), "..") {
			return fmt.Errorf("entry %q leaves the archive", h.Name)
		}
		name := path.Join(dest, path.Clean("/"+h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := fs.MkdirAll(name); err != nil {
				return err
			}
		case tar.TypeReg:
			if h.Size > left.bytes {
				return fmt.Errorf("entry %q: more than %d bytes unpacked", h.Name, left.archiveLimits.bytes)
			}
			b, err := io.ReadAll(io.LimitReader(tr, left.bytes+1))
			if err != nil {
				return fmt.Errorf("entry %q: %w", h.Name, err)
			}
			if left.bytes -= int64(len(b)); left.bytes < 0 {
				return fmt.Errorf("entry %q: more than %d bytes unpacked", h.Name, left.archiveLimits.bytes)
			}
			if err := fs.MkdirAll(path.Dir(name)); err != nil {
				return err
			}
			if err := fs.WriteFile(name, b); err != nil {
				return err
			}
		case tar.TypeXGlobalHeader:
		case tar.TypeSymlink, tar.TypeLink:
			if !left.skipLinks {
				return fmt.Errorf("entry %q: a %s, not a file or directory", h.Name, entryKind(h.Typeflag))
			}
		default:
			return fmt.Errorf("entry %q: a %s, not a file or directory", h.Name, entryKind(h.Typeflag))
		}
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func entryKind(t byte) string {
	switch t {
	case tar.TypeSymlink:
		return "symbolic link"
	case tar.TypeLink:
		return "hard link"
	}
	return fmt.Sprintf("special file (type %q)", t)
}
