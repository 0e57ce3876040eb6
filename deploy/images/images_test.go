package main

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestImages builds every service's image as `make images` does, then for each tarball (what
// `docker load` reads): its config runs the binary as the unprivileged user, with the version
// labels; its files unpack to a root holding the binary, the CA bundle and the user; and the
// binary, run from there, answers --help. The OCI layout holds the four images by name.
func TestImages(t *testing.T) {
	out := t.TempDir()
	require.NoError(t, build(out, "1.2.3-test", "example.com/troupe", runtime.GOARCH, caFile))

	idx, err := layout.ImageIndexFromPath(filepath.Join(out, "oci"))
	require.NoError(t, err)
	manifest, err := idx.IndexManifest()
	require.NoError(t, err)
	var names []string
	for _, m := range manifest.Manifests {
		names = append(names, m.Annotations["org.opencontainers.image.ref.name"])
	}
	assert.ElementsMatch(t, []string{"example.com/troupe-renderer:1.2.3-test", "example.com/troupe-applier:1.2.3-test",
		"example.com/troupe-health:1.2.3-test", "example.com/troupe-history:1.2.3-test"}, names)

	for _, svc := range services {
		t.Run(svc, func(t *testing.T) {
			img, err := tarball.ImageFromPath(filepath.Join(out, svc+".tar"), nil)
			require.NoError(t, err)
			cfg, err := img.ConfigFile()
			require.NoError(t, err)
			assert.Equal(t, "65532:65532", cfg.Config.User, "not root")
			assert.Equal(t, []string{"/usr/local/bin/troupe-" + svc}, cfg.Config.Entrypoint)
			assert.Equal(t, "1.2.3-test", cfg.Config.Labels["org.opencontainers.image.version"])
			assert.Len(t, cfg.Config.Labels["org.opencontainers.image.revision"], 40, "the commit")
			assert.Equal(t, "linux", cfg.OS)

			root := t.TempDir()
			modes := unpack(t, mutate.Extract(img), root)
			assert.Equal(t, os.FileMode(0o755), modes["usr/local/bin/troupe-"+svc].Perm())
			assert.Contains(t, read(t, root, "etc/passwd"), "nonroot:x:65532:65532:")
			assert.Contains(t, read(t, root, "etc/ssl/certs/ca-certificates.crt"), "BEGIN CERTIFICATE")
			assert.Equal(t, os.ModeSticky|0o777, modes["tmp"]&(os.ModeSticky|os.ModePerm), "a writable /tmp")

			cmd := exec.Command(filepath.Join(root, "usr/local/bin/troupe-"+svc), "--help")
			cmd.Env = []string{} // nothing of the test's environment: as in the image
			b, err := cmd.CombinedOutput()
			require.NoError(t, err, "%s --help: %s", svc, b)
			assert.Contains(t, string(b), "--server string", "%s --help: %s", svc, b)
		})
	}
}

// unpack writes the files of a flattened image into root and returns each entry's mode.
func unpack(t *testing.T, rc io.ReadCloser, root string) map[string]os.FileMode {
	t.Helper()
	defer rc.Close()
	modes := map[string]os.FileMode{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return modes
		}
		require.NoError(t, err)
		name := strings.TrimSuffix(h.Name, "/")
		p := filepath.Join(root, name)
		require.True(t, strings.HasPrefix(p, root+string(os.PathSeparator)), "entry %s leaves the root", h.Name)
		modes[name] = h.FileInfo().Mode()
		switch h.Typeflag {
		case tar.TypeDir:
			require.NoError(t, os.MkdirAll(p, 0o755))
		case tar.TypeReg:
			require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, os.FileMode(h.Mode)&os.ModePerm)
			require.NoError(t, err)
			_, err = io.Copy(f, tr)
			require.NoError(t, err)
			require.NoError(t, f.Close())
		default:
			t.Fatalf("entry %s: type %c, not a file or directory", h.Name, h.Typeflag)
		}
	}
}

func read(t *testing.T, root, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, name))
	require.NoError(t, err)
	return string(b)
}
