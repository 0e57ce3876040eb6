package render

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/troupe-dev/troupe/events"
)

// entry is one tar entry of a test archive.
type entry struct {
	name, link string
	typ        byte
	size       int64 // of a regular file's body: that many 'a's
}

func archive(t testing.TB, entries ...entry) []byte {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: 0o644, Size: e.size}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		require.NoError(t, tw.WriteHeader(h))
		if e.typ == tar.TypeReg {
			_, err := tw.Write(bytes.Repeat([]byte("a"), int(e.size)))
			require.NoError(t, err)
		}
	}
	require.NoError(t, tw.Close())
	require.NoError(t, gz.Close())
	return buf.Bytes()
}

// TestUntarRefusesWhatItShould: an archive bomb (small compressed, huge unpacked), too many
// entries, a path out of the archive, links and devices are refused with an error naming the
// entry; nothing is truncated silently; a good archive unpacks.
func TestUntarRefusesWhatItShould(t *testing.T) {
	limits := archiveLimits{bytes: 1 << 20, entries: 10}
	reg := func(name string, size int64) entry { return entry{name: name, typ: tar.TypeReg, size: size} }
	for name, tc := range map[string]struct {
		data []byte
		want string
	}{
		"bomb":             {archive(t, reg("a.yaml", 600<<10), reg("b.yaml", 600<<10)), `entry "b.yaml": more than 1048576 bytes unpacked`},
		"one huge file":    {archive(t, reg("big.yaml", 64<<20)), `entry "big.yaml": more than 1048576 bytes unpacked`},
		"too many entries": {archive(t, reg("0", 1), reg("1", 1), reg("2", 1), reg("3", 1), reg("4", 1), reg("5", 1), reg("6", 1), reg("7", 1), reg("8", 1), reg("9", 1), reg("10", 1)), "more than 10 entries"},
		"traversal":        {archive(t, reg("../../etc/cron.d/x", 1)), `entry "../../etc/cron.d/x" leaves the archive`},
		"traversal inside": {archive(t, reg("a/../../x", 1)), `leaves the archive`},
		"symlink":          {archive(t, entry{name: "link.yaml", typ: tar.TypeSymlink, link: "/etc/passwd"}), `entry "link.yaml": a symbolic link`},
		"hard link":        {archive(t, entry{name: "h.yaml", typ: tar.TypeLink, link: "a.yaml"}), "a hard link"},
		"device":           {archive(t, entry{name: "dev", typ: tar.TypeChar}), "special file"},
		"not gzip":         {[]byte("plain text"), "not a .tar.gz"},
	} {
		t.Run(name, func(t *testing.T) {
			err := untarInto(filesys.MakeFsInMemory(), bytes.NewReader(tc.data), limits)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}

	fs := filesys.MakeFsInMemory()
	require.NoError(t, untarInto(fs, bytes.NewReader(archive(t, entry{name: "dir/", typ: tar.TypeDir}, reg("dir/a.yaml", 10), reg("/abs.yaml", 3))), limits))
	got, err := fs.ReadFile("/dir/a.yaml")
	require.NoError(t, err)
	assert.Equal(t, strings.Repeat("a", 10), string(got))
	assert.True(t, fs.Exists("/abs.yaml"), "an absolute name lands under the archive's root")
}

// FuzzUntar: whatever the bytes, untarInto returns (no panic, no hang), and what it unpacks stays
// within its limits.
func FuzzUntar(f *testing.F) {
	f.Add(archive(f, entry{name: "kustomization.yaml", typ: tar.TypeReg, size: 20}, entry{name: "d/", typ: tar.TypeDir}))
	f.Add(archive(f, entry{name: "../x", typ: tar.TypeReg, size: 1}))
	f.Add(archive(f, entry{name: "l", typ: tar.TypeSymlink, link: "/"}))
	f.Add([]byte{0x1f, 0x8b, 0x08})
	f.Fuzz(func(t *testing.T, data []byte) {
		limits := archiveLimits{bytes: 4096, entries: 8}
		fs := filesys.MakeFsInMemory()
		if err := untarInto(fs, bytes.NewReader(data), limits); err != nil {
			return
		}
		var total int64
		files := 0
		require.NoError(t, fs.Walk("/", func(p string, info os.FileInfo, err error) error {
			if err == nil && !info.IsDir() {
				total += info.Size()
				files++
			}
			return err
		}))
		assert.LessOrEqual(t, total, limits.bytes)
		assert.LessOrEqual(t, files, limits.entries)
	})
}

// TestUploadsAreBounded: an upload larger than MaxSourceSize is refused, not read whole; an
// uploaded kustomize archive that unpacks past it is a bad_archive naming the entry.
func TestUploadsAreBounded(t *testing.T) {
	big := archive(t, entry{name: "kustomization.yaml", typ: tar.TypeReg, size: 10}, entry{name: "big.yaml", typ: tar.TypeReg, size: 8 << 10})
	var read int
	r, err := New(Options{MaxSourceSize: 4 << 10, Sources: func(_ context.Context, digest string) (io.ReadCloser, error) {
		if digest == "huge" {
			return io.NopCloser(readCounter{&read}), nil // never ends
		}
		return io.NopCloser(bytes.NewReader(big)), nil
	}})
	require.NoError(t, err)
	in := func(src events.Source) Input {
		return Input{Release: events.Release{Namespace: "prod", Name: "web"}, Revision: 1, Request: events.Requested{Source: src}}
	}
	_, err = r.Render(t.Context(), in(events.Source{Manifests: &events.ManifestsSource{Object: "huge"}}))
	var e *events.Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, ReasonSourceTooLarge, e.Reason)
	assert.LessOrEqual(t, read, 4<<10+1, "read no further than the limit")

	_, err = r.Render(t.Context(), in(events.Source{Kustomize: &events.KustomizeSource{Object: "big"}}))
	require.ErrorAs(t, err, &e)
	assert.Equal(t, ReasonBadArchive, e.Reason)
	assert.Contains(t, e.Message, `entry "big.yaml": more than 4096 bytes unpacked`)
}

// readCounter is an endless stream of 'a's that counts what was read.
type readCounter struct{ n *int }

func (c readCounter) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	*c.n += len(p)
	return len(p), nil
}
