package render

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// ReasonSourceNotAllowed is a path source outside the renderer's source roots (or any path
// source, when it has none). Its message never says whether the path exists.
const ReasonSourceNotAllowed = "source_not_allowed"

// roots are the directories path sources may name, as given and with symlinks resolved.
type roots struct{ given, real []string }

func newRoots(dirs []string) (roots, error) {
	var rs roots
	for _, d := range dirs {
		abs, err := filepath.Abs(d)
		if err != nil {
			return rs, fmt.Errorf("renderer: source root %s: %w", d, err)
		}
		real, err := filepath.EvalSymlinks(abs)
		if err != nil {
			return rs, fmt.Errorf("renderer: source root %s: %w", d, err)
		}
		rs.given, rs.real = append(rs.given, abs), append(rs.real, real)
	}
	return rs, nil
}

// under reports whether p (absolute, clean) is one of dirs or inside one.
func under(p string, dirs []string) bool {
	for _, d := range dirs {
		if rel, err := filepath.Rel(d, p); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return true
		}
	}
	return false
}

// confine returns where path source p (of field, e.g. "helm.path") really is, symlinks resolved,
// when that is under a source root; else an error that does not tell whether p exists.
func (rs roots) confine(field, p string) (string, error) {
	if len(rs.real) == 0 {
		return "", fail(ReasonSourceNotAllowed, nil, "%s %s: this renderer reads no path sources (started without --source-root): upload the source instead", field, p)
	}
	refused := fail(ReasonSourceNotAllowed, nil, "%s %s: not under a source root of the renderer (--source-root)", field, p)
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", refused
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		if under(abs, rs.given) || under(abs, rs.real) {
			return "", fail(ReasonSourceNotFound, nil, "%s %s: not found", field, p)
		}
		return "", refused
	}
	if !under(real, rs.real) {
		return "", refused
	}
	return real, nil
}

// contains reports whether p, symlinks resolved, is under a source root.
func (rs roots) contains(p string) bool {
	abs, err := filepath.Abs(p)
	if err != nil {
		return false
	}
	real, err := filepath.EvalSymlinks(abs)
	return err == nil && under(real, rs.real)
}

// linkOut returns a symlink under dir (or under a directory a link in it names, inside the
// roots) that leads out of the roots, "" when there is none: Helm's chart loader follows links,
// so a chart under a root is refused when one would take it elsewhere.
func (rs roots) linkOut(dir string) string {
	seen := map[string]bool{}
	var walk func(string) string
	walk = func(d string) string {
		if seen[d] {
			return ""
		}
		seen[d] = true
		var out string
		_ = filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err != nil || e.Type()&fs.ModeSymlink == 0 {
				return nil
			}
			real, err := filepath.EvalSymlinks(p)
			if err != nil {
				return nil // dangling: the loader fails on it, reading nothing
			}
			if !under(real, rs.real) {
				out = p
				return filepath.SkipAll
			}
			if info, err := os.Stat(real); err == nil && info.IsDir() {
				if out = walk(real); out != "" {
					return filepath.SkipAll
				}
			}
			return nil
		})
		return out
	}
	return walk(dir)
}

// confinedFS is the disk as kustomize sees it for a kustomization under a source root: it reads
// only under the roots (a base or a file elsewhere, through a symlink too, is not found) and
// writes nothing.
type confinedFS struct {
	filesys.FileSystem
	roots roots
}

func (f confinedFS) allowed(p string) error {
	if f.roots.contains(p) {
		return nil
	}
	return fmt.Errorf("%s: outside the renderer's source roots", p)
}

func (f confinedFS) Open(p string) (filesys.File, error) {
	if err := f.allowed(p); err != nil {
		return nil, err
	}
	return f.FileSystem.Open(p)
}

func (f confinedFS) ReadFile(p string) ([]byte, error) {
	if err := f.allowed(p); err != nil {
		return nil, err
	}
	return f.FileSystem.ReadFile(p)
}

func (f confinedFS) ReadDir(p string) ([]string, error) {
	if err := f.allowed(p); err != nil {
		return nil, err
	}
	return f.FileSystem.ReadDir(p)
}

func (f confinedFS) IsDir(p string) bool { return f.allowed(p) == nil && f.FileSystem.IsDir(p) }

func (f confinedFS) Exists(p string) bool { return f.allowed(p) == nil && f.FileSystem.Exists(p) }

func (f confinedFS) CleanedAbs(p string) (filesys.ConfirmedDir, string, error) {
	if err := f.allowed(p); err != nil {
		return "", "", err
	}
	return f.FileSystem.CleanedAbs(p)
}

func (f confinedFS) Glob(pattern string) ([]string, error) {
	matches, err := f.FileSystem.Glob(pattern)
	var out []string
	for _, m := range matches {
		if f.allowed(m) == nil {
			out = append(out, m)
		}
	}
	return out, err
}

func (f confinedFS) Walk(p string, fn filepath.WalkFunc) error {
	if err := f.allowed(p); err != nil {
		return err
	}
	return f.FileSystem.Walk(p, fn)
}

func (confinedFS) Create(p string) (filesys.File, error) { return nil, readOnly(p) }
func (confinedFS) Mkdir(p string) error                  { return readOnly(p) }
func (confinedFS) MkdirAll(p string) error               { return readOnly(p) }
func (confinedFS) RemoveAll(p string) error              { return readOnly(p) }
func (confinedFS) WriteFile(p string, _ []byte) error    { return readOnly(p) }
