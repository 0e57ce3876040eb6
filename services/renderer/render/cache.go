package render

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/Masterminds/semver/v3"
)

// cacheKey returns the key of in, or false when its output cannot be known to be the same as an
// earlier one's: a chart from a repository or registry by a version range or tag that may move.
// Local files count by path, size and modification time, as build tools do; uploaded sources by
// digest.
func (r *Renderer) cacheKey(in *pass) (string, bool) {
	if len(in.Request.ValuesFrom) > 0 {
		return "", false // what the cluster holds may change between two identical requests
	}
	h := sha256.New()
	req, err := json.Marshal(in.Request)
	if err != nil {
		return "", false
	}
	fmt.Fprintf(h, "%s\x00%t\x00%s\x00%s\x00", in.Release, in.Revision > 1, req, in.caps.KubeVersion.String())
	for _, v := range in.caps.APIVersions {
		fmt.Fprintf(h, "%s\x00", v)
	}
	src := in.Request.Source
	var local string
	switch {
	case src.Helm != nil && src.Helm.Path != "":
		local = src.Helm.Path
	case src.Helm != nil && (src.Helm.OCI != "" || src.Helm.RepoURL != ""):
		if _, err := semver.StrictNewVersion(strings.TrimPrefix(src.Helm.Version, "v")); err != nil {
			return "", false
		}
	case src.Kustomize != nil && src.Kustomize.Path != "":
		local = src.Kustomize.Path
	case src.Manifests != nil && src.Manifests.Path != "":
		local = src.Manifests.Path
	}
	if local != "" && (!r.roots.contains(local) || !statTree(h, local)) { // outside the roots: refused, uncached
		return "", false
	}
	return hex.EncodeToString(h.Sum(nil)), true
}

// statTree writes the path, size and modification time of every file under root into h.
func statTree(h interface{ Write([]byte) (int, error) }, root string) bool {
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00%d\x00%d\x00", p, info.Size(), info.ModTime().UnixNano())
		return nil
	})
	return err == nil
}
