// Command images builds an OCI image of each troupe service — renderer, applier, health,
// history — without a Docker daemon and without pulling a base image: a static Go binary
// (CGO_ENABLED=0), the build machine's CA certificates, and /etc/passwd and /etc/group naming an
// unprivileged user (65532, "nonroot", the uid distroless uses), in one layer on an empty image;
// the image runs as that user, with OCI labels naming the version and the commit. It writes an
// OCI image layout (OUT/oci: `crane push --image-refs`, `oras`, `skopeo copy oci:…`) and one
// tarball per image (OUT/<service>.tar: `docker load`, `crane push`).
//
// Why go-containerregistry: it is the library ko and crane are built on, it builds and writes
// images entirely in process (no daemon, no registry), and troupe already uses it (the renderer's
// tests run its in-process registry). ko itself would build the binaries too, but it wants a
// base image from a registry or a ko config per service; what an image of a static binary needs
// is a few files, and this keeps each image's contents in one place a test reads.
//
// Images are reproducible: files and the image are stamped with the commit's time (or
// SOURCE_DATE_EPOCH), not the build's.
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Services are the images built, each from services/<name>/cmd/<name>.
var services = []string{"renderer", "applier", "health", "history"}

// User is the unprivileged user every image runs as.
const (
	uid      = 65532
	userName = "nonroot"
)

// caFile is where Go's crypto/x509 looks first on Linux, and where the image puts the bundle.
const caFile = "/etc/ssl/certs/ca-certificates.crt"

func main() {
	out := flag.String("out", "bin/images", "directory to write the OCI layout and the tarballs into")
	version := flag.String("version", "", "version label and tag (default: 0.0.0-dev+<commit>)")
	repo := flag.String("repository", "ghcr.io/troupe-dev/troupe", "image repository; each image is <repository>-<service>:<version>")
	arch := flag.String("arch", runtime.GOARCH, "GOARCH of the images")
	ca := flag.String("ca-certificates", caFile, "the CA bundle to put in the images")
	flag.Parse()
	if err := build(*out, *version, *repo, *arch, *ca); err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

func build(out, version, repo, arch, ca string) error {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	commit, when := gitHead(root)
	if version == "" {
		version = "0.0.0-dev"
		if commit != "" {
			version += "+" + commit[:12]
		}
	}
	certs, err := os.ReadFile(ca)
	if err != nil {
		return fmt.Errorf("CA certificates: %w (install Debian's ca-certificates, or pass -ca-certificates)", err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "troupe-images-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	lay, err := layout.Write(filepath.Join(out, "oci"), empty.Index)
	if err != nil {
		return err
	}
	for _, svc := range services {
		bin := filepath.Join(tmp, svc)
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./services/"+svc+"/cmd/"+svc)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %w\n%s", svc, err, b)
		}
		img, err := image(svc, bin, certs, version, commit, arch, when)
		if err != nil {
			return fmt.Errorf("image %s: %w", svc, err)
		}
		tag := fmt.Sprintf("%s-%s:%s", repo, svc, strings.ReplaceAll(version, "+", "-"))
		ref, err := name.NewTag(tag)
		if err != nil {
			return fmt.Errorf("image %s: %w", svc, err)
		}
		if err := tarball.WriteToFile(filepath.Join(out, svc+".tar"), ref, img); err != nil {
			return fmt.Errorf("image %s: %w", svc, err)
		}
		if err := lay.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag})); err != nil {
			return fmt.Errorf("image %s: %w", svc, err)
		}
		d, _ := img.Digest()
		fmt.Printf("%s\t%s\t%s\n", svc, tag, d)
	}
	return nil
}

// image is one service's image: its binary, the CA bundle and the user files, one layer.
func image(svc, bin string, certs []byte, version, commit, arch string, when time.Time) (v1.Image, error) {
	exe, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	entry := "/usr/local/bin/troupe-" + svc
	content := files(entry, exe, certs, when)
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(content)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
	if err != nil {
		return nil, err
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture, cfg.Created = "linux", arch, v1.Time{Time: when}
	cfg.Config.Entrypoint = []string{entry}
	cfg.Config.User = strconv.Itoa(uid) + ":" + strconv.Itoa(uid)
	cfg.Config.WorkingDir = "/"
	cfg.Config.Env = []string{"SSL_CERT_FILE=" + caFile}
	cfg.Config.Labels = map[string]string{
		"org.opencontainers.image.title":       "troupe " + svc,
		"org.opencontainers.image.description": "troupe's " + svc + " service",
		"org.opencontainers.image.version":     version,
		"org.opencontainers.image.revision":    commit,
		"org.opencontainers.image.source":      "https://github.com/troupe-dev/troupe",
		"org.opencontainers.image.licenses":    "Apache-2.0",
	}
	return mutate.ConfigFile(img, cfg)
}

// files is the image's one layer: directories, /etc/passwd and /etc/group, the CA bundle, the
// binary, and /tmp (world-writable, sticky) for a Pod that mounts nothing there.
func files(entry string, exe, certs []byte, when time.Time) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := func(p string, mode int64) {
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: p + "/", Mode: mode, ModTime: when})
	}
	file := func(p string, mode int64, data []byte) {
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: mode, Size: int64(len(data)), ModTime: when})
		_, _ = tw.Write(data)
	}
	for _, d := range []string{"etc", "etc/ssl", "etc/ssl/certs", "usr", "usr/local", "usr/local/bin", "home", "home/" + userName} {
		dir(d, 0o755)
	}
	dir("tmp", 0o1777)
	file("etc/passwd", 0o644, fmt.Appendf(nil, "root:x:0:0:root:/root:/sbin/nologin\n%s:x:%d:%d:%s:/home/%s:/sbin/nologin\n", userName, uid, uid, userName, userName))
	file("etc/group", 0o644, fmt.Appendf(nil, "root:x:0:\n%s:x:%d:\n", userName, uid))
	file(strings.TrimPrefix(caFile, "/"), 0o644, certs)
	file(strings.TrimPrefix(entry, "/"), 0o755, exe)
	_ = tw.Close()
	return buf.Bytes()
}

// repoRoot is the directory of the workspace's go.work, as the go command resolves it (the
// builds below run there).
func repoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOWORK").Output()
	work := strings.TrimSpace(string(out))
	if err != nil || work == "" || work == "off" {
		return "", fmt.Errorf("no go.work for the working directory (go env GOWORK: %q, %v): run from troupe's repository", work, err)
	}
	return filepath.Dir(work), nil
}

// gitHead is the commit checked out and its time, or SOURCE_DATE_EPOCH's; zero when neither.
func gitHead(root string) (string, time.Time) {
	var commit string
	var when time.Time
	if b, err := exec.Command("git", "-C", root, "log", "-1", "--format=%H %ct").Output(); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			commit = f[0]
			if s, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				when = time.Unix(s, 0).UTC()
			}
		}
	}
	if s, err := strconv.ParseInt(os.Getenv("SOURCE_DATE_EPOCH"), 10, 64); err == nil {
		when = time.Unix(s, 0).UTC()
	}
	return commit, when
}
