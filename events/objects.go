package events

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Objects keeps content in a JetStream object store under its sha256 digest ("sha256:<hex>"),
// so equal content is stored once and anyone holding a digest can fetch and verify it.
type Objects struct {
	store    jetstream.ObjectStore
	stream   jetstream.Stream
	bucket   string
	signer   *Signer
	attestor *Attestor
}

// SignWith makes Put sign what it stores with s: its writer can be told (TrustOnly).
func (o *Objects) SignWith(s *Signer) { o.signer = s }

// TrustOnly makes Get refuse content that a's writers did not sign (ErrUntrustedWriter): a
// reader that acts on what it reads (the applier on a bundle) then trusts its writer, not
// whoever NATS let write the store.
func (o *Objects) TrustOnly(a *Attestor) { o.attestor = a }

// OpenObjects opens the object store bucket (created by Provision).
func OpenObjects(ctx context.Context, js jetstream.JetStream, bucket string) (*Objects, error) {
	store, err := js.ObjectStore(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("open object store %s: %w", bucket, err)
	}
	stream, err := js.Stream(ctx, "OBJ_"+bucket)
	if err != nil {
		return nil, fmt.Errorf("open object store %s: %w", bucket, err)
	}
	return &Objects{store: store, stream: stream, bucket: bucket}, nil
}

// Digest returns the digest of b, as Put names it.
func Digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

var digestsRE = regexp.MustCompile(`sha256:([0-9a-f]{12})[0-9a-f]{52}`)

// ShortDigests shortens every digest in s to its first 12 hex digits, for people to read (tables,
// traces); a short digest is not one Get finds.
func ShortDigests(s string) string { return digestsRE.ReplaceAllString(s, "sha256:$1") }

// Put streams r into the store and returns its digest and size. The content is never held in
// memory whole: it is uploaded under a temporary name while the store computes its SHA-256, then
// renamed to its digest, or dropped if that digest is stored already.
func (o *Objects) Put(ctx context.Context, r io.Reader) (digest string, size int64, err error) {
	tmp := "upload-" + nuid.Next()
	info, err := o.store.Put(ctx, jetstream.ObjectMeta{Name: tmp}, r)
	if err != nil {
		return "", 0, fmt.Errorf("put object: %w", err)
	}
	digest, err = natsDigest(info.Digest)
	if err != nil {
		_ = o.store.Delete(ctx, tmp)
		return "", 0, err
	}
	meta := jetstream.ObjectMeta{Name: digest}
	if o.signer != nil {
		if meta.Headers, err = o.signer.headers(digest); err != nil {
			return "", 0, fmt.Errorf("put object %s: sign: %w", digest, err)
		}
	}
	err = o.store.UpdateMeta(ctx, tmp, meta)
	if errors.Is(err, jetstream.ErrObjectAlreadyExists) {
		err = o.store.Delete(ctx, tmp)
		if err == nil && o.signer != nil {
			// Stored before, maybe unsigned or by another writer: this writer vouches for it now.
			err = o.store.UpdateMeta(ctx, digest, meta)
		}
	}
	if err != nil {
		return "", 0, fmt.Errorf("put object %s: %w", digest, err)
	}
	return digest, int64(info.Size), nil
}

// PutBytes stores b as Put does, for content held in memory whole already (a rendered bundle,
// its values): its digest is computed first, so content stored before (by this writer, when it
// signs) costs one read and no write — most values, and a bundle rendered again. New content
// goes through Put's temporary name, so an object already stored is never rewritten under a
// reader.
func (o *Objects) PutBytes(ctx context.Context, b []byte) (digest string, size int64, err error) {
	digest = Digest(b)
	info, err := o.store.GetInfo(ctx, digest)
	switch {
	case errors.Is(err, jetstream.ErrObjectNotFound):
	case err != nil:
		return "", 0, fmt.Errorf("put object %s: %w", digest, err)
	case o.signedByUs(digest, info.Headers):
		return digest, int64(len(b)), nil
	}
	return o.Put(ctx, bytes.NewReader(b))
}

// signedByUs reports whether h holds this writer's signature of digest (ed25519 signs the same
// bytes the same way), or this writer does not sign.
func (o *Objects) signedByUs(digest string, h nats.Header) bool {
	if o.signer == nil {
		return true
	}
	want, err := o.signer.headers(digest)
	if err != nil {
		return false
	}
	for k := range want {
		if h.Get(k) != want.Get(k) {
			return false
		}
	}
	return true
}

// Get returns a reader of the content stored under digest. The reader reports ErrDigestMismatch
// at its end if the content read does not match. It wraps ErrNotFound when there is none.
func (o *Objects) Get(ctx context.Context, digest string) (io.ReadCloser, error) {
	if !digestRE.MatchString(digest) {
		return nil, fmt.Errorf("get object: %q is not a digest sha256:<64 hex digits>", digest)
	}
	want, _ := hex.DecodeString(strings.TrimPrefix(digest, "sha256:"))
	info, err := o.store.GetInfo(ctx, digest)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("get object %s: %w", digest, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get object %s: %w", digest, err)
	}
	if o.attestor != nil {
		if err := o.attestor.Check(info.Headers, digest); err != nil {
			return nil, fmt.Errorf("get object %s: %w", digest, err)
		}
	}
	if info.Chunks == 1 {
		// One chunk (most bundles: up to 128 KiB): read it directly from the bucket's stream
		// (the object store layout, ADR-20) rather than through a consumer made for the purpose,
		// which costs the server more than the read.
		m, err := o.stream.GetLastMsgForSubject(ctx, "$O."+o.bucket+".C."+info.NUID)
		if err != nil {
			return nil, fmt.Errorf("get object %s: %w", digest, err)
		}
		return &verifyingReader{rc: io.NopCloser(bytes.NewReader(m.Data)), h: sha256.New(), want: want, digest: digest}, nil
	}
	// Chunks stream on after Get returns, under its ctx: a caller's without a deadline (StopAt)
	// would give the whole read JetStream's default API timeout (seconds), so the read gets its
	// own, by size, ended when the reader is closed.
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second+time.Duration(info.Size>>20)*time.Second)
	res, err := o.store.Get(rctx, digest)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		cancel()
		return nil, fmt.Errorf("get object %s: %w", digest, ErrNotFound)
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("get object %s: %w", digest, err)
	}
	return &verifyingReader{rc: res, h: sha256.New(), want: want, digest: digest, cancel: cancel}, nil
}

// Has reports whether content with digest is stored.
func (o *Objects) Has(ctx context.Context, digest string) (bool, error) {
	_, err := o.store.GetInfo(ctx, digest)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("stat object %s: %w", digest, err)
	}
	return true, nil
}

// Delete removes the content stored under digest.
func (o *Objects) Delete(ctx context.Context, digest string) error {
	if err := o.store.Delete(ctx, digest); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("delete object %s: %w", digest, err)
	}
	return nil
}

// natsDigest converts the object store's "SHA-256=<base64url>" into "sha256:<hex>".
func natsDigest(d string) (string, error) {
	b64, ok := strings.CutPrefix(d, "SHA-256=")
	if !ok {
		return "", fmt.Errorf("object store digest %q is not SHA-256", d)
	}
	sum, err := base64.URLEncoding.DecodeString(b64)
	if err != nil {
		return "", fmt.Errorf("object store digest %q: %w", d, err)
	}
	return "sha256:" + hex.EncodeToString(sum), nil
}

// verifyingReader hashes what it reads and checks the digest at EOF, so a caller never trusts
// content that does not match the digest it asked for.
type verifyingReader struct {
	rc io.ReadCloser
	h  interface {
		Write([]byte) (int, error)
		Sum([]byte) []byte
	}
	want   []byte
	digest string
	cancel context.CancelFunc // of the read's own timeout; nil for one read at once
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	n, err := v.rc.Read(p)
	_, _ = v.h.Write(p[:n])
	if errors.Is(err, io.EOF) {
		if got := v.h.Sum(nil); string(got) != string(v.want) {
			return n, fmt.Errorf("%w: %s: content hashes to sha256:%x", ErrDigestMismatch, v.digest, got)
		}
	}
	return n, err
}

func (v *verifyingReader) Close() error {
	if v.cancel != nil {
		defer v.cancel()
	}
	return v.rc.Close()
}
